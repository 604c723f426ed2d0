"""`convnet cam CHECKPOINT IMAGE`: write a Grad-CAM heatmap of where the model looked for a class."""
from __future__ import annotations

import argparse
from pathlib import Path

from convnet.errors import ConfigError, ConvnetError

HELP = "Write a Grad-CAM picture of which parts of an image made the model choose a class."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="model.safetensors written by `convnet train`, or its run folder")
    parser.add_argument("image", help="the image to explain (any format Pillow reads)")
    parser.add_argument("--class", dest="class_name", default=None, metavar="NAME", help="the class to explain (default: the class the model predicts)")
    parser.add_argument("--out", type=Path, default=Path("cam"), help="folder for cam_<class>.png (created)")


def run(args: argparse.Namespace) -> int:
    # Imported when the command runs: `convnet --help` and the other commands skip loading them.
    from convnet.engine.checkpoint import load_checkpoint
    from convnet.viz.cam import write_cam

    clf = load_checkpoint(args.checkpoint)
    pixels = clf.to_input(args.image)
    try:
        path = write_cam(clf.model, pixels, clf.model_input(pixels), clf.classes, args.out, args.class_name)
    except ConvnetError:  # its own sentence (ConvnetError is a ValueError)
        raise
    except (OSError, ValueError) as e:  # --out is a file, or lies below one, or the disk refuses; ValueError: a NUL byte in it
        raise ConfigError(f"Cannot write into --out {args.out} ({getattr(e, 'strerror', None) or e}); name a folder, new or existing.") from None
    print(path)
    return 0
