"""`convnet cam CHECKPOINT IMAGE`: write a Grad-CAM heatmap of where the model looked for a class."""
from __future__ import annotations

import argparse
from pathlib import Path

# The two commands that look inside the network load and place their pictures alike.
from convnet.cli.features import cannot_write, out_folder, pytorch_model
from convnet.errors import ConvnetError

HELP = "Write a Grad-CAM picture of which parts of an image made the model choose a class."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="model.safetensors written by `convnet train`, or its run folder")
    parser.add_argument("image", help="the image to explain (any format Pillow reads)")
    parser.add_argument("--class", dest="class_name", default=None, metavar="NAME",
                        help="the class to explain (default: the class the model predicts)")
    parser.add_argument("--out", type=Path,
                        help="folder for cam_<class>.png, created (default: cam/<image name>/ beside the model, "
                        "in its run folder)")


def run(args: argparse.Namespace) -> int:
    # Imported when the command runs: `convnet --help` and the other commands skip loading them.
    from convnet.viz.cam import write_cam

    clf = pytorch_model(args.checkpoint, "Grad-CAM pictures")
    pixels = clf.to_input(args.image)
    out = out_folder(args.out, args.checkpoint, "cam", args.image)
    try:
        path = write_cam(clf.model, pixels, clf.model_input(pixels), clf.classes, out, args.class_name)
    except ConvnetError:  # its own sentence (ConvnetError is a ValueError)
        raise
    except (OSError, ValueError) as e:
        raise cannot_write(out, e) from None
    print(path)
    return 0
