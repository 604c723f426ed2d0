"""convnet show-data: the first images of a data set with their classes, as a PNG grid."""
from __future__ import annotations

import argparse

from convnet.cli._common import add_data_argument

HELP = "Save the first N images of a data set with their class names as a PNG grid."


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_data_argument(p)
    p.add_argument("--split", default="train", help="which split to show")
    p.add_argument("-n", "--count", type=int, default=10, help="how many images")
    p.add_argument("--out", default="samples.png", help="PNG file to write")


def run(args: argparse.Namespace) -> int:
    from convnet.data.images import display_name
    from convnet.data.sources import load_dataset
    from convnet.errors import ConfigError
    from convnet.viz.grid import save_image_grid

    if args.count < 1:
        raise ConfigError(f"--count must be at least 1, got {args.count}.")
    if not args.out.lower().endswith(".png"):
        raise ConfigError(f"--out must name a .png file, got {args.out!r}.")
    ds = load_dataset(args.data, args.split)
    n = min(args.count, len(ds))
    captions = [ds.classes[i] for i in ds.labels[:n].tolist()]
    try:
        path = save_image_grid(ds.images[:n], captions, args.out, title=f"first {n} images: {ds.source}")
    except OSError as e:  # --out is a folder, or lies below a file, or the disk refuses
        raise ConfigError(f"Cannot write --out {args.out} ({e.strerror or e}); name a .png file in a folder you can write to.") from None
    print(display_name(f"{n} images of {ds.source}: {', '.join(captions)}"))  # display_name: folders named in any bytes
    print(display_name(f"wrote {path}"))
    return 0
