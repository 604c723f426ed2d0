"""convnet summary: a Keras-style table of a model's layers, output shapes and parameters."""
from __future__ import annotations

import argparse

from convnet.cli._common import model_args, parse_shape
from convnet.errors import ConfigError

HELP = "Print a model's layers with output shapes and parameter counts (Keras-style)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="tutorial", help="a registered model")
    p.add_argument("--arch", help="a sequential CNN spec instead of --model, e.g. c32-p-c64-p-c64-f-d64")
    p.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="an argument of the model (repeatable)")
    p.add_argument("--input", type=parse_shape, default=(3, 32, 32), help="input shape CxHxW")
    p.add_argument("--classes", type=int, default=10, help="number of output classes")
    p.add_argument("--list", action="store_true", help="list the registered models and exit")


def run(args: argparse.Namespace) -> int:
    # Imported when the command runs: `convnet --help` and the other commands skip loading them.
    from convnet.models import create_model, list_models
    from convnet.models.summary import format_summary

    if args.list:
        print("\n".join(list_models()))
        return 0
    if len(args.input) != 3:
        raise ConfigError(f"--input must be CxHxW like 3x32x32, got {'x'.join(map(str, args.input))}.")
    name, extra = args.model, model_args(args.model_arg)
    if args.arch:
        name, extra = "spec", {**extra, "arch": args.arch}
    c, h, w = args.input
    model = create_model(name, num_classes=args.classes, in_chans=c, input_size=(h, w), **extra)
    print(format_summary(model, (c, h, w), title=args.arch or name))
    return 0
