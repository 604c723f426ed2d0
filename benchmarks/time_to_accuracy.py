"""Wall time to accuracy of the `fast` and `best` recipes, and what bf16 costs and gains.

    python benchmarks/time_to_accuracy.py [--only fast,fast-fp32,best,fashion-fast,fast-8m,fast-8m-avx2] [--seed N]

Each entry runs `convnet train` as a child process, timed from start to exit (start-up and data
loading included; the data cache is warmed first so no entry pays for JPEG decoding), with its
peak resident memory. CIFAR-10 entries train on 45,000 of the CIFAR-10 training images and
validate on the other 5,000 (seeded, stratified; the test split is withheld here). The
Fashion-MNIST entry trains on all 60,000 training images and is scored on the official 10,000
test images. `fast-8m-avx2` runs restricted to AVX2 with oneDNN's and ATen's switches (the fp32
path of CPUs without AVX-512 bf16; `isa_effect` in the entry shows the restriction held). Entries
merge into benchmarks/results/time_to_accuracy.json.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from _common import RESULTS, SHARED_CIFAR, git_commit, isa_effect, isa_env, write_result

ENTRIES = {
    "fast": ["--recipe", "fast"],
    "fast-fp32": ["--recipe", "fast", "--precision", "fp32"],
    "best": ["--recipe", "best"],
    "fashion-fast": ["--recipe", "fast", "--data", "fashion-mnist", "--val-split", "0"],
    "fast-8m": ["--recipe", "fast", "--time-budget", "8m"],  # the plan and its real time: runs/<name>/plan.json
    "fast-8m-avx2": ["--recipe", "fast", "--time-budget", "8m"],
}
ISA = {"fast-8m-avx2": "avx2"}  # entries run under an instruction-set restriction (_common.ISA_ENV)
BUDGET_TOLERANCE = 0.05  # a --time-budget run must end within this share of its budget, either side


def run_child(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """Run to completion; returns (wall seconds, peak resident memory of the child in GB)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(cmd)} failed")
    return seconds, usage.ru_maxrss / 1024**2  # ru_maxrss is in KiB on Linux


def entry_key(name: str, seed: int) -> str:
    """Where an entry is stored: its name, with the seed when it is not the recipe's 0."""
    return name if seed == 0 else f"{name}-seed{seed}"


def run_entry(name: str, data: str, runs: Path, seed: int = 0) -> dict:
    args = ENTRIES[name]
    if "--data" not in args:
        args = [*args, "--data", data]
    if seed:
        args = [*args, "--seed", str(seed)]
    convnet = [sys.executable, "-m", "convnet"]
    key = entry_key(name, seed)
    isa = ISA.get(name, "native")
    train_seconds, peak_gb = run_child([*convnet, "train", *args, "--runs-dir", str(runs), "--name", key, "--quiet"],
                                       env=isa_env(isa))
    rows = list(csv.DictReader((runs / key / "history.csv").read_text().splitlines()))
    out = {"command": "convnet train " + " ".join(args), "isa": isa, "isa_effect": isa_effect(isa),
           "wall_seconds": train_seconds, "peak_memory_gb": peak_gb, "epochs": len(rows),
           "per_epoch": [{k: r[k] for k in ("epoch", "val_acc", "train_acc", "seconds")} for r in rows]}
    model = runs / key / "model.safetensors"
    if (runs / key / "plan.json").is_file():  # a --time-budget run: its plan and the time it really took
        out["plan"] = json.loads((runs / key / "plan.json").read_text())
    if name.startswith("fashion"):
        # Scored on the official test split: the evaluation is part of the time to accuracy.
        start = time.perf_counter()
        for tta in (0, 2):
            ev = json.loads(subprocess.run([*convnet, "evaluate", str(model), "--split", "test", "--tta", str(tta),
                                            "--json"], check=True, capture_output=True, text=True).stdout)
            out[f"test_acc{'_tta' if tta else ''}"] = ev["accuracy"]
        out["wall_seconds_with_evaluation"] = train_seconds + time.perf_counter() - start
    else:
        from convnet.inference.model_file import read_model_file

        metrics = read_model_file(model)[1].metrics
        out["val_acc"], out["val_acc_tta"] = metrics["val_acc"], metrics.get("val_acc_tta")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(SHARED_CIFAR))
    p.add_argument("--only", default=",".join(ENTRIES), help="comma-separated entries: " + ", ".join(ENTRIES))
    p.add_argument("--seed", type=int, default=0, help="another seed (split, initialisation, order, augmentation), "
                   "stored as '<entry>-seed<N>' beside the seed-0 entries the targets are judged on")
    args = p.parse_args()
    names = args.only.split(",")
    unknown = set(names) - set(ENTRIES)
    if unknown:
        sys.exit(f"unknown entries {sorted(unknown)}; choose from {', '.join(ENTRIES)}")
    previous = RESULTS / "time_to_accuracy.json"
    entries = json.loads(previous.read_text()).get("entries", {}) if previous.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        for data in {args.data if not n.startswith("fashion") else "fashion-mnist" for n in names}:
            subprocess.run([sys.executable, "-m", "convnet", "show-data", "--data", data, "--out", f"{tmp}/warm.png"],
                           check=True, capture_output=True)
        for name in names:
            # Entries merge across runs, so each carries its own commit and date.
            stamp = {"commit": git_commit(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            key = entry_key(name, args.seed)
            entries[key] = {**stamp, **run_entry(name, args.data, Path(tmp), args.seed)}
            print(key, json.dumps({k: v for k, v in entries[key].items() if k != "per_epoch"}), flush=True)
    targets = {}
    if "fast" in entries:
        targets["fast: val_acc_tta >= 0.910 in <= 480 s"] = (entries["fast"]["val_acc_tta"] >= 0.910
                                                             and entries["fast"]["wall_seconds"] <= 480)
    if "best" in entries:
        targets["best: val_acc_tta >= 0.925 in <= 3600 s"] = (entries["best"]["val_acc_tta"] >= 0.925
                                                              and entries["best"]["wall_seconds"] <= 3600)
    if "fashion-fast" in entries:
        e = entries["fashion-fast"]
        targets["fashion-fast: test_acc_tta >= 0.940 in <= 600 s"] = (e["test_acc_tta"] >= 0.940
                                                                      and e["wall_seconds_with_evaluation"] <= 600)
    for name in ("fast-8m", "fast-8m-avx2"):
        if name in entries:
            targets[f"{name}: ends within 480 s +- {BUDGET_TOLERANCE:.0%}"] = (
                abs(entries[name]["wall_seconds"] / 480 - 1) <= BUDGET_TOLERANCE)
    targets["peak memory <= 4 GB"] = all(e["peak_memory_gb"] <= 4 for e in entries.values())
    write_result("time_to_accuracy", {"data": args.data, "entries": entries, "targets": targets})


if __name__ == "__main__":
    main()
