"""`convnet cam CHECKPOINT IMAGE`: write a Grad-CAM heatmap of where the model looked for a class."""
from __future__ import annotations

import argparse
from pathlib import Path

HELP = "Write a Grad-CAM picture of which parts of an image made the model choose a class."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="model.safetensors written by `convnet train`, or its run folder")
    parser.add_argument("image", help="the image to explain (any format Pillow reads)")
    parser.add_argument("--class", dest="class_name", default=None, metavar="NAME", help="the class to explain (default: the class the model predicts)")
    parser.add_argument("--out", type=Path, default=Path("cam"), help="folder for cam_<class>.png (created)")


def run(args: argparse.Namespace) -> int:
    # Imported here so that `convnet --help` does not wait for torch.
    from convnet.engine.checkpoint import load_checkpoint
    from convnet.viz.cam import write_cam

    print(write_cam(load_checkpoint(args.checkpoint), args.image, args.out, args.class_name))
    return 0
