"""One process against several: training throughput and loss curves of a torchrun launch.

    python benchmarks/ddp_scaling.py [--recipe tutorial] [--epochs 3] [--repeats 2] [--nproc 2]
    python benchmarks/ddp_scaling.py --device cuda --nproc 8      # on a machine with 8 GPUs

On a CPU it compares one process using every core (`torch` threads = cores) with `--nproc`
processes of cores / nproc threads each, launched by torchrun (gloo), the same global batch,
seed and data (the 45,000 / 5,000 seeded split of the CIFAR-10 training images). On CUDA it
compares one GPU with `--nproc` GPUs (NCCL). Each case runs `convnet train` as a child process;
throughput is the median over epochs 2.. of every round (epoch 1 pays for start-up), rounds are
interleaved so that a noisy machine slows every case alike. The per-epoch training losses are
kept side by side: a distributed run trains the same model (training/distributed.py), so its
curve should lie on the single process's. Writes benchmarks/results/ddp_scaling.json.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from _common import RESULTS, SHARED_CIFAR, git_commit, timed_run, write_result


def run_case(nproc: int, threads: int, args: argparse.Namespace, runs: Path, name: str) -> dict:
    train = ["train", "--recipe", args.recipe, "--data", str(args.data), "--epochs", str(args.epochs),
             "--device", args.device, "--runs-dir", str(runs), "--name", name, "--quiet"]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "convnet", *train]
    else:
        cmd = [sys.executable, "-m", "convnet", *train]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    seconds, proc = timed_run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    rows = list(csv.DictReader((runs / name / "history.csv").read_text().splitlines()))
    return {
        "wall_seconds": seconds,
        "images_per_s": (statistics.median(float(r["images_per_s"]) for r in rows[1:]) if len(rows) > 1
                         else float(rows[0]["images_per_s"])),
        "train_loss_per_epoch": [float(r["train_loss"]) for r in rows],
        "val_acc_per_epoch": [float(r["val_acc"]) for r in rows],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="tutorial")
    parser.add_argument("--data", type=Path, default=SHARED_CIFAR)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    # (label, processes, threads per process)
    if args.device == "cpu":
        cases = [(f"1 process x {cores} threads", 1, cores),
                 (f"{args.nproc} processes x {max(1, cores // args.nproc)} threads", args.nproc,
                  max(1, cores // args.nproc))]
    else:
        cases = [("1 GPU", 1, 1), (f"{args.nproc} GPUs", args.nproc, 1)]
    rounds: dict[str, list[dict]] = {label: [] for label, _, _ in cases}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for label, nproc, threads in cases:
                result = run_case(nproc, threads, args, Path(tmp), f"r{r}-{nproc}")
                rounds[label].append(result)
                print(f"round {r + 1}: {label}: {result['images_per_s']:.0f} img/s, "
                      f"losses {result['train_loss_per_epoch']}")
    summary = {label: {"processes": nproc, "threads_per_process": threads,
                       "images_per_s": statistics.median(x["images_per_s"] for x in rounds[label]),
                       "train_loss_per_epoch": rounds[label][0]["train_loss_per_epoch"],
                       "val_acc_per_epoch": rounds[label][0]["val_acc_per_epoch"], "rounds": rounds[label]}
               for label, nproc, threads in cases}
    (one, _, _), (many, _, _) = cases
    speedup = summary[many]["images_per_s"] / summary[one]["images_per_s"]
    print(f"{many} against {one}: {speedup:.2f}x images/s")
    # One file, an entry per recipe and device: a run replaces only its own entry.
    path = RESULTS / "ddp_scaling.json"
    entries = json.loads(path.read_text()).get("entries", {}) if path.is_file() else {}
    entries[f"{args.recipe}-{args.device}-{args.nproc}"] = {
        "recipe": args.recipe, "data": str(args.data), "epochs": args.epochs, "device": args.device,
        "repeats": args.repeats, "commit": git_commit(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cases": summary, "speedup": speedup,
    }
    write_result("ddp_scaling", {"method": "median images/s over epochs 2.. and over interleaved rounds; "
                                           "losses of the first round",
                                 "entries": entries})


if __name__ == "__main__":
    main()
