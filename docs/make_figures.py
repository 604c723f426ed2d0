"""Regenerate every figure of docs/walkthrough.md by running the commands the page shows.

    .venv/bin/python docs/make_figures.py
    .venv/bin/python docs/make_figures.py --model runs/quickstart-*/model.safetensors

Trains the tutorial CNN on the embedded CIFAR-10 sample (about a minute on 2 CPU cores) and
writes docs/figures/*.png. With --model, redraws only the figures of section 6 (feature maps,
filters, Grad-CAM) from that model, e.g. the quick start's run, which trains the same way.
"""
from __future__ import annotations

import argparse
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
        make_section_6(model, Path(tmp))
    print(f"figures in {FIGURES}")


def make_section_6(model: Path, tmp: Path) -> None:
    """What the network sees: the first ship of the sample's test split, as the walkthrough shows it."""
    image = sorted((SAMPLE_TEST / "ship").glob("*.jpg"))[0]
    run("features", str(model), str(image), "--out", str(tmp / "features"))
    shutil.copy(tmp / "features" / "filters.png", FIGURES / "filters.png")
    shutil.copy(tmp / "features" / "features_layers.0.png", FIGURES / "features_first_conv.png")
    run("cam", str(model), str(image), "--out", str(tmp / "cam"))
    shutil.copy(next((tmp / "cam").glob("cam_*.png")), FIGURES / "cam.png")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="redraw only section 6's figures from this model.safetensors")
    args = parser.parse_args()
    if args.model is None:
        make()
    else:
        with tempfile.TemporaryDirectory() as tmp:
            make_section_6(args.model, Path(tmp))
