"""convnet train: train a model and write its run folder."""
from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import time

from convnet.cli._common import add_data_argument, duration, image_size, model_args
from convnet.errors import ConfigError
from convnet.training import config as cfg
from convnet.training.recipes import list_recipes, recipe_config

# how long another rank waits for rank 0 to state a reason they all stop for: well past ranks' start-up skew
RANK_0_FIRST_S = 10

HELP = "Train a model (by default the tutorial's CNN on CIFAR-10 with the tutorial's settings) and write runs/<name>/."

# Flags that map one-to-one onto TrainConfig fields; None means "the recipe's value". The
# others: model_args and augment are built from several flags, recipe from --recipe.
_FIELDS = tuple(f.name for f in dataclasses.fields(cfg.TrainConfig)
                if f.name not in ("model_args", "augment", "recipe"))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", default="tutorial", choices=list_recipes(),
                   help="preset to start from; other flags override its fields")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue an interrupted run from its folder (other flags are ignored)")
    _add_data_arguments(p)
    p.add_argument("--model", help="a registered model (see `convnet summary --list`)")
    p.add_argument("--arch", help="build a sequential CNN from a spec, e.g. c32-p-c64-p-c64-f-d64 (sets --model spec)")
    p.add_argument("--model-arg", action="append", metavar="KEY=VALUE",
                   help="an argument of the model, e.g. width=32 (repeatable)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--time-budget", type=duration, metavar="DURATION",
                   help="fit the run to this machine: e.g. 8m, 90s, 1h30m; measures the first steps and sets --epochs "
                   "so training and the final evaluation end within it")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--optimizer", choices=cfg.OPTIMIZERS,
                   help="adam; sgd with Nesterov momentum; muon: Muon for conv filters, sgd for the rest "
                   "(BatchNorm models)")
    p.add_argument("--lr", type=float, help="peak learning rate (with muon: of the parameters sgd updates)")
    p.add_argument("--momentum", type=float)
    p.add_argument("--muon-lr", type=float, help="peak step size of Muon's conv filter updates")
    p.add_argument("--muon-momentum", type=float, help="Nesterov momentum of Muon's conv filter updates")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--bias-lr-scale", type=float, help="learning-rate multiplier for biases and norm parameters")
    p.add_argument("--bias-decay", action=argparse.BooleanOptionalAction, default=None,
                   help="decay biases and norm parameters by as much per step as the weights (airbench)")
    p.add_argument("--last-epoch-steps", type=int, metavar="N",
                   help="stop the last epoch after N steps, its learning-rate schedule ending there "
                   "(--time-budget plans this; 0: a whole epoch)")
    p.add_argument("--whiten-bias-epochs", type=int, metavar="N",
                   help="airnet: train the whitening layer's bias only in the first N epochs, then freeze it "
                   "(faster steps; 0: train it throughout)")
    p.add_argument("--schedule", choices=cfg.SCHEDULES, help="learning-rate schedule after the warm-up")
    p.add_argument("--warmup-epochs", type=float)
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--ema", type=float, help="decay of a weight average evaluated instead of the raw weights (0 = off)")
    p.add_argument("--flip", choices=cfg.FLIP_CHOICES, help="horizontal flip augmentation")
    p.add_argument("--translate", type=int, help="random translation by up to N pixels (reflect padding)")
    p.add_argument("--cutout", type=int, help="zero a random NxN square in each image")
    p.add_argument("--precision", choices=cfg.PRECISIONS,
                   help="auto: bf16 where the hardware supports it (fp32 for a compiled model)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the model, on a CUDA GPU (it trains in fp32; "
                   "refused on the CPU, where torch's compiled backward crashes)")
    p.add_argument("--device", choices=cfg.DEVICES)
    p.add_argument("--eval-batch-size", type=int)
    p.add_argument("--tta", type=int, choices=cfg.TTA_LEVELS,
                   help="test-time augmentation for the final validation score")
    p.add_argument("--engine", choices=cfg.ENGINE_NAMES,
                   help="scratch: the NumPy reference engine (tutorial and --arch models)")
    p.add_argument("--sync-bn", action=argparse.BooleanOptionalAction, default=None,
                   help="under torchrun: BatchNorm statistics over the global batch (all processes), "
                   "not each process's slice")
    p.add_argument("--dist-backend", choices=cfg.DIST_BACKENDS,
                   help="under torchrun: gloo (CPUs), nccl (CUDA GPUs), auto picks")
    p.add_argument("--seed", type=int)
    p.add_argument("--runs-dir", help="where run folders go (default runs/)")
    p.add_argument("--name", help="run folder name (default <model>-<date>-<time>)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    _show_recipe_defaults(p)


def _add_data_arguments(p: argparse.ArgumentParser) -> None:
    """The flags that choose the data and how it is read."""
    add_data_argument(p)
    p.add_argument("--val-split", type=float,
                   help="fraction carved from the training data for validation when it has no val split")
    p.add_argument("--limit", type=int, help="train on a seeded, stratified subset of N images")
    p.add_argument("--image-size", type=image_size, help="resize images to S or HxW (default: the data's own size)")
    p.add_argument("--channels", type=int, choices=cfg.CHANNELS,
                   help="1 (grayscale) or 3 (RGB) (default: the data's own)")
    p.add_argument("--normalize", choices=cfg.NORMALIZATIONS,
                   help="unit: pixels/255 as in the tutorial; standard: per-channel mean/std")
    p.add_argument("--stream", action=argparse.BooleanOptionalAction, default=None,
                   help="read an image folder's batches from disk, decoded once into a cache file, "
                   "instead of holding it in memory")
    p.add_argument("--memory-budget-mb", type=int,
                   help="MB of decoded images held in memory; larger folders stream (default: half the available RAM)")
    p.add_argument("--loader-workers", type=int,
                   help="processes reading a streamed folder's batches ahead of training (default 2; 0: none)")


def _show_recipe_defaults(p: argparse.ArgumentParser) -> None:
    """Help shows each recipe field's value in the tutorial recipe, not argparse's 'None'."""
    tutorial = recipe_config("tutorial")
    values = {**dataclasses.asdict(tutorial), **dataclasses.asdict(tutorial.augment)}
    for action in p._actions:
        if action.dest in values and action.default is None and values[action.dest] is not None:
            action.help = f"{action.help + '; ' if action.help else ''}tutorial recipe: {values[action.dest]}"


def config_from_args(args: argparse.Namespace):
    """The recipe's TrainConfig with every flag the user gave applied."""
    given = {f: getattr(args, f) for f in _FIELDS if getattr(args, f) is not None}
    if args.arch is not None:
        given["model"] = "spec"
    extra = model_args(args.model_arg)
    if args.arch is not None:
        extra["arch"] = args.arch
    if extra:
        given["model_args"] = extra
    base = recipe_config(args.recipe)
    augment = {k: getattr(args, k) for k in ("flip", "translate", "cutout") if getattr(args, k) is not None}
    if augment:
        given["augment"] = dataclasses.replace(base.augment, **augment)
    if given.get("model", base.model) != base.model and "whiten_bias_epochs" not in given:
        # the recipe's rule is for its own model's whitening layer (`--recipe fast --model resnet`)
        given["whiten_bias_epochs"] = 0
    return dataclasses.replace(base, **given)


def run(args: argparse.Namespace) -> int:
    # Imported here: the training engine is the slowest import, and `convnet train --help` needs none of it.
    from convnet.training.distributed import SaidOnRank0
    from convnet.training.train import resume, train

    if args.resume == "":
        raise ConfigError("--resume is empty; pass the run folder to continue, e.g. --resume runs/NAME.")
    try:
        if args.resume is not None:
            result = resume(args.resume, progress=not args.quiet)
        else:
            result = train(config_from_args(args), progress=not args.quiet)
    except SaidOnRank0:
        # Rank 0 says why every rank stops. torchrun ends the launch when its first process exits:
        # this one waits, so that rank 0 prints first and torchrun ends this one. (Launched without
        # torchrun, or behind a rank 0 that is far slower to start, it says it too.)
        time.sleep(RANK_0_FIRST_S)
        raise
    if os.environ.get("RANK", "0") != "0":
        return 0  # under torchrun, rank 0 reports for the run
    m = result.metrics
    val = f", validation accuracy {m['val_acc']:.4f}" if m.get("val_acc") is not None else ""
    tta = f" ({m['val_acc_tta']:.4f} with TTA)" if "val_acc_tta" in m else ""
    print(f"done: {result.run_dir} (train accuracy {m['train_acc']:.4f}{val}{tta})")
    # evaluate finds the run's data itself; its validation split holds images the run never trained on
    # (the default, test, is all of a flat folder, training images included).
    held_out = " --split val" if m.get("val_acc") is not None else ""
    print(f"next: convnet evaluate {shlex.quote(str(result.run_dir / 'model.safetensors'))}{held_out}")
    return 0
