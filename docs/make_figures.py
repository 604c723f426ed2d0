"""Regenerate every figure of docs/walkthrough.md by running the commands the page shows.

    .venv/bin/python docs/make_figures.py

Trains the tutorial CNN on the embedded CIFAR-10 sample (about a minute on 2 CPU cores) and
writes docs/figures/*.png.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from convnet.cli import main

DOCS = Path(__file__).resolve().parent
FIGURES = DOCS / "figures"
SAMPLE_TEST = DOCS.parent / "src" / "convnet" / "data" / "sample" / "cifar10" / "test"


def run(*argv: str) -> None:
    print("$ convnet", " ".join(argv))
    if main(list(argv)) != 0:
        raise SystemExit(f"convnet {' '.join(argv)} failed")


def make() -> None:
    FIGURES.mkdir(exist_ok=True)
    run("explain", "--png", str(FIGURES / "worked_example.png"))
    run("show-data", "--data", "sample", "--count", "10", "--out", str(FIGURES / "samples.png"))
    with tempfile.TemporaryDirectory() as tmp:
        run("train", "--data", "sample", "--runs-dir", tmp, "--name", "docs", "--quiet")
        model = Path(tmp) / "docs" / "model.safetensors"
        shutil.copy(Path(tmp) / "docs" / "curves.png", FIGURES / "curves.png")
        run("evaluate", str(model), "--data", "sample", "--split", "test", "--out", tmp)
        shutil.copy(Path(tmp) / "confusion.png", FIGURES / "confusion.png")
        shutil.copy(Path(tmp) / "mistakes.png", FIGURES / "mistakes.png")
        image = sorted((SAMPLE_TEST / "ship").glob("*.jpg"))[0]
        run("features", str(model), str(image), "--out", tmp)
        shutil.copy(Path(tmp) / "filters.png", FIGURES / "filters.png")
        first_layer = sorted(Path(tmp).glob("features_*.png"))[0]
        shutil.copy(first_layer, FIGURES / "features_first_conv.png")
        run("cam", str(model), str(image), "--out", tmp)
        shutil.copy(next(Path(tmp).glob("cam_*.png")), FIGURES / "cam.png")
    print(f"figures in {FIGURES}")


if __name__ == "__main__":
    make()
