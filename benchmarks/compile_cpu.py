"""Whether `torch.compile` trains conv + max-pool networks correctly on this CPU.

    python benchmarks/compile_cpu.py [--isa native,avx2]

Each case builds a small network (3x3 conv with C filters, 2x2 max-pool, ReLU, a linear head),
runs one training step compiled and one in eager mode on the same batch, in a child process of
its own (a crash inside torch's generated code kills the process, not this script), and records
one outcome: `ok` with the largest gradient difference from eager fp64, `wrong` when that
difference is over 1e-4 (or NaN), `error` with the exception's message, `crashed` with the signal
or the C library's last line (heap corruption aborts), or `hung`. The networks of convnet's recipes are among
the cases: the tutorial network's first layers (32 filters) at its batch of 128.

This is the evidence behind convnet refusing `--compile` on the CPU (inference.runtime); with
engine_speed.py's `--set choices` (eager faster than compiled fp32) it says compiling costs more
than it gives there. Writes benchmarks/results/compile_cpu.json.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

from _common import isa_effect, isa_env, write_result

CASES = [(channels, batch) for channels in (4, 8, 16, 32) for batch in (16, 128)]
TOLERANCE = 1e-4
TIMEOUT_S = 600  # a case still running then is recorded as hung (compiling one takes seconds)

CHILD = r"""
import json, sys, torch, torch.nn as nn, torch.nn.functional as F
channels, batch = int(sys.argv[1]), int(sys.argv[2])
torch.manual_seed(0)
net = nn.Sequential(nn.Conv2d(3, channels, 3), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(),
                    nn.Linear(channels * 15 * 15, 10))
x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
F.cross_entropy(torch.compile(net)(x), y).backward()
compiled = [p.grad.clone() for p in net.parameters()]
reference = net.double()
reference.zero_grad()
F.cross_entropy(reference(x.double()), y).backward()
print(json.dumps({"max_grad_diff": max((c.double() - p.grad).abs().max().item()
                                       for c, p in zip(compiled, reference.parameters()))}))
"""


def run_case(channels: int, batch: int, isa: str) -> dict:
    case = {"channels": channels, "batch": batch}
    try:
        proc = subprocess.run([sys.executable, "-c", CHILD, str(channels), str(batch)], env=isa_env(isa),
                              capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {**case, "outcome": "hung", "last_line": f"no result after {TIMEOUT_S} s"}
    if proc.returncode == 0:
        diff = json.loads(proc.stdout.strip().splitlines()[-1])["max_grad_diff"]
        return {**case, "outcome": "ok" if diff <= TOLERANCE else "wrong", "max_grad_diff": diff}
    last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1][:300]
    if proc.returncode < 0:  # killed by a signal: SIGABRT from glibc's heap checks, SIGSEGV
        return {**case, "outcome": "crashed", "signal": -proc.returncode, "last_line": last}
    return {**case, "outcome": "error", "last_line": last}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--isa", default="native,avx2",
                   help="comma-separated: native, avx2 (an AVX-512 machine restricted to AVX2)")
    args = p.parse_args()
    results = {}
    for isa in args.isa.split(","):
        cases = []
        for channels, batch in CASES:
            cases.append(run_case(channels, batch, isa))
            print(isa, cases[-1], flush=True)
        results[isa] = {"isa_effect": isa_effect(isa), "cases": cases,
                        "failed": sum(c["outcome"] != "ok" for c in cases), "of": len(cases)}
    import torch

    write_result("compile_cpu", {"torch": torch.__version__, "tolerance": TOLERANCE,
                                 "method": "one training step compiled against eager fp64, "
                                           "each case in its own process",
                                 "results": results})


if __name__ == "__main__":
    main()
