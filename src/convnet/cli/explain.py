"""`convnet explain`: the tutorial's worked example, step by step, every number computed by the NumPy engine."""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from convnet.errors import ConfigError, ConvnetError, DataError, SettingError, SpecError
from convnet.scratch.explain import IMAGE_SIZE, render_text, worked_example

HELP = ("Walk through the tutorial's worked example (convolution, ReLU, pooling, dense, softmax) "
        "with every number shown.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kernel", type=int, default=2, help="filter size k (k x k per channel)")
    parser.add_argument("--stride", type=int, default=1, help="convolution stride s")
    parser.add_argument("--padding", type=int, default=0, help="zeros added around the image, p")
    parser.add_argument("--pool", type=int, default=2, help="pooling window size")
    parser.add_argument("--pool-stride", type=int, default=1, help="pooling stride (the tutorial's example uses 1)")
    parser.add_argument("--seed", type=int, default=0, help="draws the random image, filter and dense weights")
    parser.add_argument("--image", metavar="FILE",
                        help=f"use this picture, shrunk to {IMAGE_SIZE}x{IMAGE_SIZE} RGB, instead of random pixels")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object with every array instead of the text")
    parser.add_argument("--png", metavar="FILE", help="also draw the grids, numbers written in, to this image file")


def _read_image(path: str) -> np.ndarray:
    # Imported when an image is given: the worked example itself needs only NumPy.
    from convnet.data.images import load_image

    try:
        return load_image(path, (IMAGE_SIZE, IMAGE_SIZE), 3).numpy()
    except (OSError, ValueError) as e:
        raise DataError(f"Cannot read {path} as an image ({e}); pass a PNG or JPEG file.") from None


def run(args: argparse.Namespace) -> int:
    for flag, value in (("--image", args.image), ("--png", args.png)):
        if value == "":
            raise ConfigError(f"{flag} is empty; name a file, or leave {flag} out.")
    image = _read_image(args.image) if args.image is not None else None
    try:
        result = worked_example(image, args.seed, args.kernel, args.stride, args.padding, args.pool, args.pool_stride)
    except SettingError as e:  # the library names its settings; here they are flags
        raise SpecError(e.phrase(lambda name: "--" + name.replace("_", "-"))) from None
    print(json.dumps(result) if args.json else render_text(result))
    if args.png is not None:
        # Imported only for --png: matplotlib is the slowest import this command could need.
        from convnet.viz.explain_figure import save_worked_example_figure

        try:
            save_worked_example_figure(result, args.png)
        except ConvnetError:  # its own sentence (ConvnetError is a ValueError)
            raise
        except (OSError, ValueError) as e:  # a folder that does not exist, a file in the way; ValueError: a NUL byte
            raise ConfigError(
                f"Cannot write --png {args.png} ({getattr(e, 'strerror', None) or e}); "
                "name a file in an existing folder."
            ) from None
        # stderr under --json, so stdout stays one JSON object.
        print(f"wrote {args.png}", file=sys.stderr if args.json else sys.stdout)
    return 0
