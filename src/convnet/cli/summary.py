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
    from convnet.formats import ModelInfo
    from convnet.inference.model_file import build_model
    from convnet.models import list_models
    from convnet.models.summary import format_summary

    if args.list:
        print("\n".join(list_models()))
        return 0
    if len(args.input) != 3:
        raise ConfigError(f"--input must be CxHxW like 3x32x32, got {'x'.join(map(str, args.input))}.")
    if args.classes < 1:
        raise ConfigError(f"--classes must be 1 or more, got {args.classes}.")
    if args.arch == "":
        raise ConfigError("--arch is empty; give a spec like c32-p-c64-p-c64-f-d64, or leave --arch out.")
    name, extra = args.model, model_args(args.model_arg)
    if args.arch is not None:
        name, extra = "spec", {**extra, "arch": args.arch}
    if name not in list_models():
        raise ConfigError(f"--model {name!r} is not a registered model; `convnet summary --list` lists them.")
    c, h, w = args.input
    # build_model turns a builder's complaint about an argument into one sentence; the classes,
    # mean and std are placeholders that only fix the output count.
    model = build_model(ModelInfo(name, extra, tuple(map(str, range(args.classes))), c, (h, w), (0.5,) * c,
                                  (0.25,) * c))
    print(format_summary(model, (c, h, w), title=args.arch or name))
    return 0
