"""Variants of the `fast` recipe against `fast` itself, seed by seed, on a GPU (or the CPU).

    python benchmarks/recipe_sweep.py [--variants a,b,...] [--seeds 0-7] [--device cuda]
                                      [--data DIR] [--deadline S] [--out FILE] [--rehearse]

Each variant changes a few of `fast`'s settings (VARIANTS) and trains on the same seeds as
`fast`. A seed also picks the 45,000/5,000 split, so the comparison is paired: each variant's
accuracy with TTA minus `fast`'s on the same seed and split, whose spread is far smaller than
the spread between seeds. Runs go seed by seed (every variant on seed 0, then seed 1, ...), so
a deadline that cuts the sweep short leaves every variant with the same seeds. All runs share
one process (start-up once; the decoded data is cached after the first).

A GPU runs a `fast` in a few seconds, so it can afford the seeds a recipe decision needs; the
variants change nothing that costs CPU time, except those that say so (`epochs`). What wins
here is then confirmed on the CPU (time_to_accuracy.py). `--rehearse` runs the chosen variants
at toy size on the CPU to check the script. Writes benchmarks/results/recipe_sweep.json
(--result names another) and a copy at --out.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from _common import RESULTS, SHARED_CIFAR, git_commit, write_result

from convnet.training.recipes import RECIPES, recipe_config
from convnet.training.train import train

_FAST = RECIPES["fast"]
VARIANTS: dict[str, dict] = {
    "fast": {},
    "ema95": {"ema": 0.95},  # a weight average over about the last 20 steps (airbench94's late lookahead)
    "muon-x1.25": {"muon_lr": _FAST.muon_lr * 1.25},
    "muon-x0.8": {"muon_lr": _FAST.muon_lr * 0.8},
    "head-x1.5": {"lr": _FAST.lr * 1.5},  # the SGD part: head, biases and BN shifts (decay per step scales with it)
    "head-x0.67": {"lr": _FAST.lr / 1.5},
    "smooth-0.1": {"label_smoothing": 0.1},
    "epochs-11": {"epochs": 11},  # costs 10% more time: what an epoch is worth
    "epochs-9": {"epochs": 9},
    # Wider for fewer epochs, at about fast's multiply-adds per run (118M a 32x32 image forward):
    # 139M x 8 epochs, 162M x 7, 223M x 5.
    "w288-e8": {"model_args": {"widths": (64, 288, 288)}, "epochs": 8},
    "w320-e7": {"model_args": {"widths": (64, 320, 320)}, "epochs": 7},
    "w384-e5": {"model_args": {"widths": (64, 384, 384)}, "epochs": 5},
    "compiled": {"compile": True},  # torch.compile: its epochs' time against eager, and that it trains
}
DEFAULT_VARIANTS = "fast,ema95,muon-x1.25,muon-x0.8,head-x1.5,head-x0.67,epochs-11"


def seeds(text: str) -> list[int]:
    """'0-7' or '0,3,5' -> the seeds."""
    if "-" in text:
        low, high = text.split("-")
        return list(range(int(low), int(high) + 1))
    return [int(s) for s in text.split(",")]


def summary(runs: list[dict], variants: list[str]) -> dict:
    """Per variant: its seeds' accuracies with TTA, and paired differences from `fast` on the same seeds."""
    base = {r["seed"]: r["val_acc_tta"] for r in runs if r["variant"] == "fast" and "val_acc_tta" in r}
    out = {}
    for v in variants:
        mine = [r for r in runs if r["variant"] == v and "val_acc_tta" in r]
        if not mine:
            continue
        accs = [r["val_acc_tta"] for r in mine]
        diffs = [r["val_acc_tta"] - base[r["seed"]] for r in mine if r["seed"] in base]
        out[v] = {
            "seeds": [r["seed"] for r in mine],
            "mean_val_acc_tta": statistics.mean(accs),
            "min_val_acc_tta": min(accs),
            "mean_seconds": statistics.mean(r["seconds"] for r in mine),
        }
        if v != "fast" and len(diffs) > 1:
            sd = statistics.stdev(diffs)
            out[v]["paired"] = {"mean_diff": statistics.mean(diffs), "stderr": sd / len(diffs) ** 0.5,
                                "wins": sum(d > 0 for d in diffs), "of": len(diffs)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", default=DEFAULT_VARIANTS, help=f"comma-separated, from: {', '.join(VARIANTS)}")
    p.add_argument("--seeds", default="0-7", help="'0-7' or '0,3,5'")
    p.add_argument("--device", default="cuda")
    p.add_argument("--data", default=str(SHARED_CIFAR))
    p.add_argument("--deadline", type=float, default=3600,
                   help="seconds for the sweep; a run that would not fit is not started")
    p.add_argument("--out", type=Path, help="also copy the result file here")
    p.add_argument("--result", default="recipe_sweep", help="the result file's name in benchmarks/results/")
    p.add_argument("--commit", default=None, help="the commit measured (where the copy has no git history)")
    p.add_argument("--rehearse", action="store_true",
                   help="run at toy size on the CPU (2,000 images, 1 epoch) to check the script; "
                        "keeps the real results")
    args = p.parse_args()
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or "fast" not in variants:
        p.error(f"unknown variants {unknown}; the list must include fast, the baseline" if unknown
                else "the list must include fast, the baseline")
    device = "cpu" if args.rehearse else args.device
    if device == "cuda" and not torch.cuda.is_available():
        p.error("no CUDA GPU here; pass --device cpu, or --rehearse to check the script")
    toy = {"limit": 2000, "epochs": 1} if args.rehearse else {}
    figures: dict = {"commit": args.commit or git_commit(),
                     "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
                     "data": args.data, "variants": {v: VARIANTS[v] for v in variants}, "runs": []}
    end = time.perf_counter() + args.deadline
    last = 0.0  # the latest run's seconds (the first also decodes the data)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) if args.rehearse else RESULTS

        def save() -> None:  # after every seed, so a killed sweep keeps what it measured
            figures["summary"] = summary(figures["runs"], variants)
            path = write_result(args.result, figures, folder)
            if args.out:
                shutil.copy(path, args.out)

        for seed, v in ((s, v) for s in seeds(args.seeds) for v in variants):
            if end - time.perf_counter() < 1.2 * last:
                figures["stopped"] = f"deadline: {end - time.perf_counter():.0f} s left before {v} seed {seed}"
                break
            config = replace(recipe_config("fast", **VARIANTS[v], **toy), data=args.data, device=device, seed=seed,
                             runs_dir=tmp, name=f"{v}-s{seed}")
            start = time.perf_counter()
            try:
                result = train(config, progress=False)
                row = {"val_acc": result.metrics["val_acc"],
                       "val_acc_tta": result.metrics.get("val_acc_tta", result.metrics["val_acc"]),
                       "epoch_seconds": sum(r["seconds"] for r in result.history)}
            except Exception as e:  # a variant that fails is a finding; the others still run
                row = {"error": f"{type(e).__name__}: {e}"}
            seconds = time.perf_counter() - start
            last = seconds
            figures["runs"].append({"variant": v, "seed": seed, "seconds": seconds, **row})
            print(f"{v} seed {seed}: {seconds:.1f} s {row}", flush=True)
            if v == variants[-1]:
                save()
        save()


if __name__ == "__main__":
    main()
