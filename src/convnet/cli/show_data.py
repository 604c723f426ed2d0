"""convnet show-data: images of a data set with their classes, as a PNG grid.

By default the first images of a seeded shuffle, so that several classes show (the tutorial's
grid is mixed because CIFAR-10's own order is; an image folder is sorted by class).
"""
from __future__ import annotations

import argparse

from convnet.cli._common import add_data_argument
from convnet.errors import ConfigError

HELP = "Save N images of a data set (a seeded shuffle, or --first) with their class names as a PNG grid."


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_data_argument(p)
    p.add_argument("--split", default="train", help="which split to show")
    p.add_argument("-n", "--count", type=int, default=10, help="how many images")
    p.add_argument("--out", default="samples.png", help="PNG file to write")
    p.add_argument("--seed", type=int, default=0, help="seed of the shuffle the images are taken from")
    p.add_argument("--first", action="store_true",
                   help="the first N files in the data's own order instead of a shuffle")


def run(args: argparse.Namespace) -> int:
    # Imported when the command runs: `convnet --help` and the other commands skip loading them.
    from convnet.data.batches import preview
    from convnet.data.images import display_name
    from convnet.data.sources import load_dataset
    from convnet.viz.grid import save_image_grid

    if args.count < 1:
        raise ConfigError(f"--count must be at least 1, got {args.count}.")
    if not args.out.lower().endswith(".png"):
        raise ConfigError(f"--out must name a .png file, got {args.out!r}.")
    if not 0 <= args.seed < 2**32:
        raise ConfigError(f"--seed must be from 0 to {2**32 - 1}, got {args.seed}.")
    ds = load_dataset(args.data, args.split)
    images, captions = preview(ds, args.count, None if args.first else args.seed)
    n = len(captions)
    which = "first" if args.first else f"shuffled (seed {args.seed})"
    try:
        # The data as the user named it: a figure made to be shared should not show this machine's paths.
        named = f"{args.data} ({args.split})" if args.data is not None else ds.source
        path = save_image_grid(images, captions, args.out, title=display_name(f"{n} images, {which}: {named}"))
    except OSError as e:  # --out is a folder, or lies below a file, or the disk refuses
        raise ConfigError(
            f"Cannot write --out {args.out} ({e.strerror or e}); name a .png file in a folder you can write to."
        ) from None
    print(display_name(f"{n} images of {ds.source}: {', '.join(captions)}"))  # display_name: folders named in any bytes
    print(display_name(f"wrote {path}"))
    return 0
