"""`convnet features CHECKPOINT IMAGE`: write the feature maps of every convolution and the first-layer filters."""
from __future__ import annotations

import argparse
from pathlib import Path

from convnet.errors import ConfigError, ConvnetError

HELP = "Write what each convolution of a model sees in one image, and its first-layer filters, as PNG files."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="model.safetensors written by `convnet train`, or its run folder")
    parser.add_argument("image", help="the image to look at (any format Pillow reads)")
    parser.add_argument("--out", type=Path, default=Path("features"), help="folder for features_<layer>.png and filters.png (created)")


def run(args: argparse.Namespace) -> int:
    # Imported when the command runs: `convnet --help` and the other commands skip loading them.
    from convnet.engine.checkpoint import load_checkpoint
    from convnet.viz.features import write_features

    clf = load_checkpoint(args.checkpoint)
    try:
        paths = write_features(clf.model, clf.model_input(args.image), args.out)
    except ConvnetError:  # its own sentence (ConvnetError is a ValueError)
        raise
    except (OSError, ValueError) as e:  # --out is a file, or lies below one, or the disk refuses; ValueError: a NUL byte in it
        raise ConfigError(f"Cannot write into --out {args.out} ({getattr(e, 'strerror', None) or e}); name a folder, new or existing.") from None
    for path in paths:
        print(path)
    return 0
