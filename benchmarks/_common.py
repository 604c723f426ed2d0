"""What every benchmark records next to its figures: machine, versions, date; and a writer."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
SHARED_CIFAR = REPO.parent / "shared" / "data" / "cifar10-jpeg" / "train"
# --isa avx2: oneDNN's and ATen's documented switches restrict an AVX-512 machine to AVX2, as on
# a CPU without AVX-512 (and so without bf16: convnet's bf16 falls back to fp32 there too).
ISA_ENV = {"avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}}
_SIMD_FLAGS = ("avx", "fma", "f16c", "amx")  # the /proc/cpuinfo flags that decide which kernels run


def isa_env(isa: str) -> dict:
    """The environment of a child process restricted to `isa` ("native": unrestricted)."""
    return {**os.environ, **ISA_ENV.get(isa, {})}


def isa_effect(isa: str) -> dict:
    """What a child process under `isa_env(isa)` sees: ATen's kernels and whether convnet would train in bf16."""
    probe = ("import json, torch; print(json.dumps({'torch_cpu_capability': torch.backends.cpu.get_cpu_capability(), "
             "'bf16_cpu': bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())}))")
    out = subprocess.run([sys.executable, "-c", probe], env=isa_env(isa), check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out)


def machine() -> dict:
    cpu, flags = platform.processor(), []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = sorted(f for f in line.split(":", 1)[1].split() if f.startswith(_SIMD_FLAGS))
                break
    except OSError:
        pass
    import torch

    return {
        "cpu": cpu,
        "cpu_flags": flags,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the ATen kernels this process uses
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "bf16_cpu": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
    }


def git_commit() -> str:
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True,
                              text=True).stdout.strip()
    except OSError:
        return ""


def write_result(name: str, figures: dict, folder: Path = RESULTS) -> Path:
    """<folder>/<name>.json (benchmarks/results/) with the machine, versions, date and commit beside the figures."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    record = {"benchmark": name, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "commit": git_commit(), "machine": machine(), **figures}
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")
    return path


def timed_run(cmd: list[str], **kw) -> tuple[float, subprocess.CompletedProcess]:
    """Run a command to completion; returns (wall seconds, the finished process)."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, **kw)
    return time.perf_counter() - start, proc
