"""The tutorial's network trained by Keras's model.fit and by convnet's recipes, side by side.

    python benchmarks/keras_vs_convnet.py [--install] [--data DIR] [--repeats 3] [--isa avx2]

Same images, same seeded stratified 45,000 / 5,000 split of the CIFAR-10 training images (the
test split is withheld here), run one after another in one process tree. Keras runs in its own
virtual environment (benchmarks/.venv-keras, created with tensorflow-cpu by --install).
Timed: each contender's whole process, start to exit (Keras: TensorFlow's import, the arrays'
load, model.fit; convnet: `convnet train` with start-up, data loading from its cache, checkpoints
and plots), and Keras's model.fit alone. The target, "wall time <= 1/6 of Keras's", is judged
process against process (`speedup_vs_keras_wall`); `speedup_vs_keras_fit` sets convnet's whole
command against Keras's fit alone, a stricter ratio that is reported beside it.
With `--isa avx2` every contender (TensorFlow's oneDNN kernels as well as torch's) runs under the
same AVX2 restriction, and the figures go to keras_vs_convnet_avx2.json.
Writes benchmarks/results/keras_vs_convnet.json.
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from _common import ISA_ENV, REPO, SHARED_CIFAR, isa_effect, isa_env, timed_run, write_result

KERAS_VENV = REPO / "benchmarks" / ".venv-keras"
RECIPES = ("tutorial", "tutorial-fast")


def ensure_keras(install: bool) -> Path:
    python = KERAS_VENV / "bin" / "python"
    if not python.exists():
        if not install:
            sys.exit(f"No Keras environment at {KERAS_VENV}; "
                     "run again with --install to create it (pip install tensorflow-cpu).")
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


def run_convnet(recipe: str, data: str, val_split: float, seed: int, runs: Path, env: dict) -> dict:
    cmd = [sys.executable, "-m", "convnet", "train", "--recipe", recipe, "--data", data, "--val-split", str(val_split),
           "--seed", str(seed), "--runs-dir", str(runs), "--name", recipe, "--quiet"]
    seconds, _ = timed_run(cmd, check=True, env=env)
    rows = list(csv.DictReader((runs / recipe / "history.csv").read_text().splitlines()))
    return {"wall_seconds": seconds, "epochs": len(rows), "train_seconds": sum(float(r["seconds"]) for r in rows),
            "val_acc": float(rows[-1]["val_acc"]), "val_acc_per_epoch": [float(r["val_acc"]) for r in rows]}


def median_of(rounds: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rounds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(SHARED_CIFAR))
    p.add_argument("--val-split", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=10, help="Keras epochs (the tutorial's 10)")
    p.add_argument("--repeats", type=int, default=3,
                   help="rounds of all three contenders; the figures are medians over rounds")
    p.add_argument("--install", action="store_true", help="create the Keras virtual environment if missing")
    p.add_argument("--isa", choices=("native", *ISA_ENV), default="native",
                   help="restrict every contender's instruction set")
    args = p.parse_args()
    env = isa_env(args.isa)
    keras_python = ensure_keras(args.install)
    keras_rounds, convnet_rounds = [], {name: [] for name in RECIPES}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sizes = export_split(args.data, args.val_split, args.seed, tmp / "split.npz")
        # Warm convnet's decode cache so no contender pays for the first JPEG decode.
        subprocess.run([sys.executable, "-m", "convnet", "show-data", "--data", args.data,
                        "--out", str(tmp / "warm.png")], check=True, capture_output=True)
        for round_ in range(args.repeats):
            # Each round runs every contender once, so slow drift of a noisy machine hits them alike.
            keras_cmd = [str(keras_python), str(REPO / "benchmarks" / "keras_tutorial.py"), str(tmp / "split.npz"),
                         str(tmp / "keras.json"), str(args.epochs)]
            wall, _ = timed_run(keras_cmd, check=True, env=env)
            keras_rounds.append({**json.loads((tmp / "keras.json").read_text()), "wall_seconds": wall})
            for name in RECIPES:
                convnet_rounds[name].append(run_convnet(name, args.data, args.val_split, args.seed,
                                                        tmp / f"runs{round_}", env))
            print(f"round {round_ + 1}/{args.repeats}: keras {wall:.1f} s, "
                  + ", ".join(f"{n} {rs[-1]['wall_seconds']:.1f} s" for n, rs in convnet_rounds.items()), flush=True)
    keras = {"tensorflow": keras_rounds[0]["tensorflow"], "params": keras_rounds[0]["params"],
             **{key: median_of(keras_rounds, key) for key in ("wall_seconds", "fit_seconds", "val_acc")},
             "rounds": keras_rounds}
    results = {}
    for name, rounds in convnet_rounds.items():
        for r, k in zip(rounds, keras_rounds, strict=True):
            r["speedup_vs_keras_wall"] = k["wall_seconds"] / r["wall_seconds"]
            r["speedup_vs_keras_fit"] = k["fit_seconds"] / r["wall_seconds"]
        keys = ("wall_seconds", "train_seconds", "val_acc", "speedup_vs_keras_wall", "speedup_vs_keras_fit")
        results[name] = {"epochs": rounds[0]["epochs"], **{key: median_of(rounds, key) for key in keys},
                         "rounds": rounds}
        results[name]["val_acc_minus_keras"] = results[name]["val_acc"] - keras["val_acc"]
    fast = results["tutorial-fast"]
    write_result("keras_vs_convnet" if args.isa == "native" else f"keras_vs_convnet_{args.isa}", {
        "isa": args.isa, "isa_env": ISA_ENV.get(args.isa, {}), "isa_effect": isa_effect(args.isa), "data": args.data,
        "split": {**sizes, "seed": args.seed,
                  "note": "validation carved from the CIFAR-10 training images; the test split is withheld"},
        "method": f"median over {args.repeats} rounds, each running Keras, then convnet's recipes; "
                  "speedups are per round, then the median",
        "keras": keras, "convnet": results,
        "targets": {"tutorial-fast wall time <= keras wall time / 6": fast["speedup_vs_keras_wall"] >= 6,
                    "tutorial-fast val_acc >= keras": fast["val_acc"] >= keras["val_acc"]},
    })

if __name__ == "__main__":
    main()
