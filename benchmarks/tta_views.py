"""Which test-time views and weights score `fast`'s models best: level 2 against richer schemes.

    python benchmarks/tta_views.py [--runs RUN_DIR ...] [--seeds 0,1,2] [--data DIR]

Without --runs it trains `fast` on each seed first (about 8 minutes each on 2 AVX-512 cores);
with --runs it scores those run folders (each one's config gives its data, split and seed).
Every model's logits on its validation split are computed once per view: each shift (dy, dx) in
[-2, 2]^2 of the reflect-padded images, plain and flipped, through the evaluation path that
training uses (inference.runtime.batched_logits: channels-last, the same autocast). Each scheme is
then a weighted sum of those logits, so all schemes are scored on the same numbers. Level 2 is
inference.tta's (airbench94's views and weights). The time per view says what a scheme would add
to a run's final evaluation.

The schemes are compared on the split they are scored on, so the best of them is picked with
hindsight: a gain of a few images out of 5,000 is not evidence. Writes
benchmarks/results/tta_views.json.
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _common import SHARED_CIFAR, write_result

from convnet.data.augment import reflect_shift
from convnet.inference.model_file import load_checkpoint
from convnet.inference.runtime import autocast_dtype, batched_logits
from convnet.training.prepare import prepare_data
from convnet.training.recipes import recipe_config
from convnet.training.run_folder import RunFolder
from convnet.training.train import train

View = tuple[int, int, bool]  # (dy, dx, flipped)
CENTRE = [(0, 0)]
DIAGONAL = [(-1, -1), (1, 1)]  # level 2's shifts
NEIGHBOURS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def scheme(shifts: list[tuple[int, int]], centre_weight: float) -> dict[View, float]:
    """The centre image and its flip share `centre_weight`; every shift, plain and flipped, shares the rest equally."""
    weights = {(0, 0, False): centre_weight / 2, (0, 0, True): centre_weight / 2}
    for (dy, dx), flipped in itertools.product(shifts, (False, True)):
        weights[(dy, dx, flipped)] = (1 - centre_weight) / (2 * len(shifts))
    return weights


SCHEMES: dict[str, dict[View, float]] = {
    "none": {(0, 0, False): 1.0},
    "flip (level 1)": scheme([], 1.0),
    "level 2": scheme(DIAGONAL, 0.5),
    "level 2, equal weights": scheme(DIAGONAL, 1 / 3),
    "4 diagonals": scheme([(-1, -1), (1, 1), (-1, 1), (1, -1)], 0.5),
    "4 axis shifts": scheme([(-1, 0), (1, 0), (0, -1), (0, 1)], 0.5),
    "8 neighbours": scheme(NEIGHBOURS, 0.5),
    "8 neighbours, equal weights": scheme(NEIGHBOURS, 1 / 9),
    "level 2 and 2-pixel diagonals": scheme(DIAGONAL + [(-2, -2), (2, 2)], 0.5),
    "every shift up to 2, equal weights": scheme([(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                                                  if (dy, dx) != (0, 0)], 1 / 25),
}
VIEWS = sorted({v for weights in SCHEMES.values() for v in weights})


def view_logits(run_dir: Path) -> tuple[dict[View, torch.Tensor], torch.Tensor, float]:
    """Logits of every view on the run's validation split, its labels, and the seconds per view."""
    config = RunFolder.open(run_dir).read_config()
    val = prepare_data(config).val
    clf = load_checkpoint(run_dir / "model.safetensors")
    amp = autocast_dtype(config.precision, clf.device)
    start, logits = time.perf_counter(), {}
    for dy, dx, flipped in VIEWS:
        n = len(val.images)
        images = (reflect_shift(val.images, torch.full((n,), dy), torch.full((n,), dx)) if (dy, dx) != (0, 0)
                  else val.images)
        images = images.flip(-1) if flipped else images
        logits[(dy, dx, flipped)] = batched_logits(clf.model, images, clf.info.mean, clf.info.std,
                                                   config.eval_batch_size, amp, channels_last=True)
    return logits, val.labels, (time.perf_counter() - start) / len(VIEWS)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="*", type=Path,
                   help="run folders of trained models (default: train fast on --seeds)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--data", default=str(SHARED_CIFAR))
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = args.runs
        if not runs:
            runs = [train(recipe_config("fast", data=args.data, seed=int(s), runs_dir=tmp, name=f"fast-seed{s}"),
                          progress=True).run_dir
                    for s in args.seeds.split(",")]
        per_run, seconds = {}, []
        for run in runs:
            logits, labels, per_view = view_logits(Path(run))
            seconds.append(per_view)
            per_run[Path(run).name] = {
                name: (sum(w * logits[v] for v, w in weights.items()).argmax(1) == labels).float().mean().item()
                for name, weights in SCHEMES.items()}
            print(Path(run).name, per_run[Path(run).name], flush=True)
    schemes = {}
    for name, weights in SCHEMES.items():
        accs = [r[name] for r in per_run.values()]
        diffs = [r[name] - r["level 2"] for r in per_run.values()]
        schemes[name] = {"views": len(weights), "val_acc_tta": accs, "mean": statistics.mean(accs),
                         "mean_minus_level_2": statistics.mean(diffs)}
        print(f"{name:36s} {len(weights):2d} views  mean {schemes[name]['mean']:.4f}  "
              f"vs level 2 {schemes[name]['mean_minus_level_2']:+.4f}")
    write_result("tta_views", {"runs": [str(r) for r in runs], "seconds_per_view": seconds, "schemes": schemes,
                               "method": "logits per view once per model on its validation split; "
                                         "schemes are weighted sums of them"})


if __name__ == "__main__":
    main()
