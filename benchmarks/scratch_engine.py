"""The NumPy reference engine on real data: `convnet train --engine scratch --limit 2000 --epochs 1`.

    python benchmarks/scratch_engine.py [--data DIR]

Times the whole command (the tutorial network on 2,000 CIFAR-10 training images, validated on
the 5,000 carved from the rest) and records its validation accuracy, so that "it learns in
minutes" is a measured claim. Writes benchmarks/results/scratch_engine.json.
"""
from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path

from _common import SHARED_CIFAR, timed_run, write_result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(SHARED_CIFAR))
    args = p.parse_args()
    argv = ["train", "--engine", "scratch", "--data", args.data, "--limit", "2000", "--epochs", "1"]
    with tempfile.TemporaryDirectory() as tmp:
        seconds, _ = timed_run([sys.executable, "-m", "convnet", *argv, "--runs-dir", tmp, "--name", "scratch",
                                "--quiet"], check=True)
        row = list(csv.DictReader(open(Path(tmp) / "scratch" / "history.csv")))[-1]
    write_result("scratch_engine", {
        "command": "convnet " + " ".join(argv), "wall_seconds": seconds, "train_seconds": float(row["seconds"]),
        "val_acc": float(row["val_acc"]), "chance": 0.1,
        "targets": {"under 300 s": seconds < 300, "learns (val_acc > 0.2)": float(row["val_acc"]) > 0.2},
    })


if __name__ == "__main__":
    main()
