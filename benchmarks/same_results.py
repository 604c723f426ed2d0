"""Do seeded runs still give the accuracies the committed results hold, after a change to the engine?

    python benchmarks/same_results.py [--only tutorial-fast,fast]

A refactor must change no measured figure. This trains each recipe on seed 0 exactly as the
benchmark that measured it did (the 45,000 / 5,000 seeded split of the CIFAR-10 training
images), then compares its validation accuracy after every epoch with the committed entry:
`tutorial-fast` with benchmarks/results/keras_vs_convnet.json (its first round), `fast` with
benchmarks/results/time_to_accuracy.json. Seeded runs on the same machine kind repeat exactly,
so the comparison is for equality. Writes benchmarks/results/same_results.json.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

from _common import RESULTS, SHARED_CIFAR, timed_run, write_result


def committed_per_epoch(recipe: str) -> tuple[list[float], str]:
    """The committed validation accuracies per epoch of `recipe` on seed 0, and where they come from."""
    if recipe == "tutorial-fast":
        record = json.loads((RESULTS / "keras_vs_convnet.json").read_text())
        return ([float(v) for v in record["convnet"]["tutorial-fast"]["rounds"][0]["val_acc_per_epoch"]],
                f"keras_vs_convnet.json at {record['commit']}")
    record = json.loads((RESULTS / "time_to_accuracy.json").read_text())
    entry = record["entries"][recipe]
    return ([float(row["val_acc"]) for row in entry["per_epoch"]],
            f"time_to_accuracy.json entry {recipe} at {entry['commit']}")


def run(recipe: str, data: Path, runs: Path) -> dict:
    seconds, proc = timed_run([sys.executable, "-m", "convnet", "train", "--recipe", recipe, "--data", str(data),
                               "--runs-dir", str(runs), "--name", recipe, "--quiet"])
    if proc.returncode != 0:
        sys.exit(f"convnet train --recipe {recipe} failed")
    rows = list(csv.DictReader((runs / recipe / "history.csv").read_text().splitlines()))
    now = [float(r["val_acc"]) for r in rows]
    before, source = committed_per_epoch(recipe)
    return {"val_acc_per_epoch": now, "committed_val_acc_per_epoch": before, "committed_in": source,
            "same": now == before, "wall_seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="tutorial-fast,fast", help="comma-separated recipes")
    parser.add_argument("--data", type=Path, default=SHARED_CIFAR)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        entries = {recipe: run(recipe, args.data, Path(tmp)) for recipe in args.only.split(",")}
    for recipe, e in entries.items():
        print(f"{recipe}: {'same' if e['same'] else 'DIFFERENT'} accuracies ({e['val_acc_per_epoch'][-1]:.4f} now, "
              f"{e['committed_val_acc_per_epoch'][-1]:.4f} committed)")
    write_result("same_results", {"data": str(args.data), "seed": 0, "entries": entries})


if __name__ == "__main__":
    main()
