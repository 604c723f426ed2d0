"""The tutorial's network trained by Keras's model.fit and by convnet's recipes, side by side.

    python benchmarks/keras_vs_convnet.py [--install] [--data DIR]

Same images, same seeded stratified 45,000 / 5,000 split of the CIFAR-10 training images (the
test split is withheld here), run one after another in one process tree. Keras runs in its own
virtual environment (benchmarks/.venv-keras, created with tensorflow-cpu by --install).
Timed: each contender's whole process, start to exit (Keras: TensorFlow's import, the arrays'
load, model.fit; convnet: `convnet train` with start-up, data loading from its cache, checkpoints
and plots), and Keras's model.fit alone. The target, "wall time <= 1/6 of Keras's", is judged
process against process (`speedup_vs_keras_wall`); `speedup_vs_keras_fit` sets convnet's whole
command against Keras's fit alone, a stricter ratio that is reported beside it.
Writes benchmarks/results/keras_vs_convnet.json.
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from _common import REPO, SHARED_CIFAR, timed_run, write_result

KERAS_VENV = REPO / "benchmarks" / ".venv-keras"


def ensure_keras(install: bool) -> Path:
    python = KERAS_VENV / "bin" / "python"
    if not python.exists():
        if not install:
            sys.exit(f"No Keras environment at {KERAS_VENV}; run again with --install to create it (pip install tensorflow-cpu).")
        subprocess.run([sys.executable, "-m", "venv", str(KERAS_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "tensorflow-cpu"], check=True)
    return python


def export_split(data: str, val_split: float, seed: int, path: Path) -> dict:
    """The split convnet's `train` carves, written as NHWC arrays for Keras."""
    from convnet.data.dataset import split_dataset
    from convnet.data.sources import load_dataset

    train, val = split_dataset(load_dataset(data, "train"), val_split, seed)
    np.savez(path, x_train=train.images.permute(0, 2, 3, 1).numpy(), y_train=train.labels.numpy(),
             x_val=val.images.permute(0, 2, 3, 1).numpy(), y_val=val.labels.numpy())
    return {"train": len(train), "val": len(val)}


def run_convnet(recipe: str, data: str, val_split: float, seed: int, runs: Path) -> dict:
    cmd = [sys.executable, "-m", "convnet", "train", "--recipe", recipe, "--data", data, "--val-split", str(val_split),
           "--seed", str(seed), "--runs-dir", str(runs), "--name", recipe, "--quiet"]
    seconds, _ = timed_run(cmd, check=True)
    rows = list(csv.DictReader(open(runs / recipe / "history.csv")))
    return {"wall_seconds": seconds, "epochs": len(rows), "train_seconds": sum(float(r["seconds"]) for r in rows),
            "val_acc": float(rows[-1]["val_acc"]), "val_acc_per_epoch": [float(r["val_acc"]) for r in rows]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(SHARED_CIFAR))
    p.add_argument("--val-split", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=10, help="Keras epochs (the tutorial's 10)")
    p.add_argument("--install", action="store_true", help="create the Keras virtual environment if missing")
    args = p.parse_args()
    keras_python = ensure_keras(args.install)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sizes = export_split(args.data, args.val_split, args.seed, tmp / "split.npz")
        # Warm convnet's decode cache so no contender pays for the first JPEG decode.
        subprocess.run([sys.executable, "-m", "convnet", "show-data", "--data", args.data, "--out", str(tmp / "warm.png")], check=True, capture_output=True)
        keras_wall, _ = timed_run([str(keras_python), str(REPO / "benchmarks" / "keras_tutorial.py"), str(tmp / "split.npz"), str(tmp / "keras.json"), str(args.epochs)], check=True)
        keras = {**json.load(open(tmp / "keras.json")), "wall_seconds": keras_wall}
        results = {name: run_convnet(name, args.data, args.val_split, args.seed, tmp / "runs") for name in ("tutorial", "tutorial-fast")}
    for r in results.values():
        r["speedup_vs_keras_wall"] = keras["wall_seconds"] / r["wall_seconds"]
        r["speedup_vs_keras_fit"] = keras["fit_seconds"] / r["wall_seconds"]
        r["val_acc_minus_keras"] = r["val_acc"] - keras["val_acc"]
    write_result("keras_vs_convnet", {
        "data": args.data, "split": {**sizes, "seed": args.seed, "note": "validation carved from the CIFAR-10 training images; the test split is withheld"},
        "keras": keras, "convnet": results,
        "targets": {"tutorial-fast wall time <= keras wall time / 6": results["tutorial-fast"]["speedup_vs_keras_wall"] >= 6,
                    "tutorial-fast val_acc >= keras": results["tutorial-fast"]["val_acc"] >= keras["val_acc"]},
    })


if __name__ == "__main__":
    main()
