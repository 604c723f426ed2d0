"""Training configuration: one frozen dataclass that says everything a run needs to repeat.

`config.json` in a run folder is `asdict(TrainConfig)`; `TrainConfig.from_dict` reads it back.
The defaults are the tutorial's: its CNN, CIFAR-10, Adam at 1e-3, cross-entropy on logits,
10 epochs, batch 32.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field

from convnet.checks import is_int
from convnet.data.augment import FLIP_MODES, AugmentConfig
from convnet.errors import ConfigError
from convnet.inference.tta import TTA_WEIGHTS
from convnet.models import list_models

# Every allowed value of a choice field, spelled once: the CLI's `choices` and the checks below
# both read these.
NORMALIZATIONS = ("unit", "standard")
OPTIMIZERS = ("adam", "sgd", "muon")
SCHEDULES = ("constant", "linear")
PRECISIONS = ("auto", "bf16", "fp32")
DEVICES = ("auto", "cpu", "cuda", "mps")
ENGINE_NAMES = ("torch", "scratch")  # training.train.ENGINES maps each to its trainer
DIST_BACKENDS = ("auto", "gloo", "nccl")  # auto: NCCL for CUDA, gloo on CPUs (training.distributed)
TTA_LEVELS = tuple(TTA_WEIGHTS)
CHANNELS = (1, 3)
MAX_IMAGE_SIDE = 4096  # pixels; larger images would not fit a batch in memory anyway
MAX_EPOCHS = 100_000
MAX_NAME_LENGTH = 100  # characters of a run folder name
FLIP_CHOICES = FLIP_MODES


@dataclass(frozen=True)
class TrainConfig:
    # data
    data: str | None = None  # a path, or "cifar10" (None), "fashion-mnist", "sample"
    val_split: float = 0.1  # fraction carved (seeded, stratified) when the data has no val split
    limit: int | None = None  # train on a seeded, stratified subset of this many images
    image_size: tuple[int, int] | None = None  # (H, W); None: the data's own size
    channels: int | None = None  # 1 or 3; None: the data's own
    normalize: str = "unit"  # "unit": x/255 as in the tutorial; "standard": per-channel mean/std of the training set
    # image folders: read batches from disk (data.streaming) even when the decoded images would fit in memory
    stream: bool = False
    # MB (10^6 bytes) of decoded images held in memory, beyond which a folder streams;
    # None: data.streaming.BUDGET_FRACTION of available RAM
    memory_budget_mb: int | None = None
    # processes reading a streamed folder's batches ahead of training; 0: read in the training process
    loader_workers: int = 2
    # model
    model: str = "tutorial"  # a name from convnet.models.list_models()
    model_args: dict = field(default_factory=dict)  # the architecture's own arguments, e.g. {"arch": "c32-p-f-d64"}
    # optimisation
    epochs: int = 10
    # seconds: plan the epochs to fit training and the final evaluation in it (training.budget)
    time_budget: float | None = None
    last_epoch_steps: int = 0  # the last epoch stops after this many steps (a time budget plans it); 0: it is whole
    batch_size: int = 32
    optimizer: str = "adam"  # adam | sgd (Nesterov momentum) | muon (Muon for conv filters, SGD for the rest)
    lr: float = 1e-3  # peak learning rate, per batch as given (no scaling by batch size)
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0  # L2 on weights (decoupled for adam: AdamW); none on biases and norms unless bias_decay
    bias_lr_scale: float = 1.0  # learning-rate multiplier for biases and norm parameters (airbench: 64)
    muon_lr: float = 0.24  # muon only: step size of the orthogonalized filter updates (airbench94_muon)
    muon_momentum: float = 0.6  # muon only: Nesterov momentum of the filter updates (airbench94_muon)
    bias_decay: bool = False  # decay biases and norm shifts too, by as much per step as the weights (airbench)
    # airnet: its whitening layer's bias learns only in these first epochs, its rate decaying to 0
    # over them, then is frozen (airbench: 3); 0: it learns throughout
    whiten_bias_epochs: int = 0
    schedule: str = "constant"  # constant | linear (warm-up, then linear decay to 0)
    warmup_epochs: float = 0.0  # linear warm-up length, in epochs (fractions allowed)
    label_smoothing: float = 0.0
    ema: float = 0.0  # decay of an exponential moving average of the weights per step; 0 = off
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # execution
    precision: str = "auto"  # auto (bf16 where the hardware has it) | bf16 | fp32
    channels_last: bool = True
    compile: bool = False  # torch.compile the model
    device: str = "auto"  # auto | cpu | cuda | mps
    eval_batch_size: int = 1024
    tta: int = 0  # test-time augmentation level for the final validation (see inference.tta)
    engine: str = "torch"  # torch | scratch (the NumPy reference engine, tutorial and spec models)
    sync_bn: bool = False  # under torchrun: BatchNorm statistics over the global batch, not each process's slice
    dist_backend: str = "auto"  # under torchrun: auto | gloo | nccl
    seed: int = 0
    recipe: str = "tutorial"  # the preset this config started from (see training.recipes)
    # output
    runs_dir: str = "runs"
    name: str | None = None  # run folder name; None: <model>-<date>-<time>

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in _FLOATS and is_int(value):
                object.__setattr__(self, f.name, float(value))  # JSON writes 1.0 as 1
        for name, check in _CHECKS.items():
            problem = check(getattr(self, name))
            if problem:
                raise ConfigError(f"{_flag(name)} {problem}, got {getattr(self, name)!r}.")
        # A tuple argument (airnet's widths) is a list in config.json: lists here too, so a config
        # equals itself read back.
        object.__setattr__(self, "model_args", {k: _lists(v) for k, v in self.model_args.items()})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """The config that `to_dict` wrote; every field checked, unknown fields refused.

        Raises:
            ConfigError: one sentence naming the first field that is wrong.
        """
        if not isinstance(d, dict):
            raise ConfigError(f"A config must be a JSON object of fields, got {type(d).__name__}.")
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"The config has unknown fields {sorted(map(str, unknown))}; "
                              "it was written by another convnet version or edited by hand.")
        d = dict(d)
        augment = d.get("augment", {})
        if not isinstance(augment, dict):
            raise ConfigError("The config field augment must be an object of flip, translate, cutout and flip_seed, "
                              f"got {augment!r}.")
        unknown = set(augment) - {f.name for f in dataclasses.fields(AugmentConfig)}
        if unknown:
            raise ConfigError(f"The config field augment has unknown fields {sorted(map(str, unknown))}; "
                              "use flip, translate, cutout and flip_seed.")
        d["augment"] = AugmentConfig(**augment)
        if isinstance(d.get("image_size"), list):
            d["image_size"] = tuple(d["image_size"])
        return cls(**d)


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')} (config field {name})"


def _is_float(v) -> bool:
    return isinstance(v, float) and math.isfinite(v)


def _int_in(low: int, high: int | None = None):
    """A whole number from `low` to `high` (None: no upper bound)."""
    def check(v):
        if not is_int(v) or v < low or (high is not None and v > high):
            return f"must be a whole number {f'from {low} to {high}' if high is not None else f'of at least {low}'}"
    return check


def _float_in(low: float, high: float | None, low_open: bool = False, high_open: bool = True):
    def check(v):
        bad = (not _is_float(v) or v < low or (low_open and v == low)
               or (high is not None and (v > high or (high_open and v == high))))
        if bad:
            lo, hi = ("(" if low_open else "["), ("" if high is None else (")" if high_open else "]"))
            return f"must be a finite number in {lo}{low}, {'inf)' if high is None else f'{high}{hi}'}"
    return check


def _one_of(choices: tuple):
    def check(v):  # of the choice's own type: 3.0 == 3 and True == 1, but neither is the whole number 3 or 1
        if not any(type(v) is type(c) and v == c for c in choices):
            return f"must be one of {', '.join(map(str, choices))}"
    return check


def _optional(check):
    return lambda v: None if v is None else check(v)


def _boolean(v):
    if not isinstance(v, bool):
        return "must be true or false"


def _text(v):
    if not isinstance(v, str) or not v or "\0" in v:
        return "must be non-empty text"


def _model(v):
    if not isinstance(v, str) or v not in list_models():
        return f"must be one of the registered models ({', '.join(list_models())})"


def _model_args(v):
    def plain(x) -> bool:  # what JSON can carry and a model builder can take
        if isinstance(x, (list, tuple)):
            return all(plain(i) for i in x)
        return x is None or isinstance(x, (str, bool, int)) or _is_float(x)

    if (not isinstance(v, dict) or not all(isinstance(k, str) and k.isidentifier() for k in v)
            or not all(plain(x) for x in v.values())):
        return "must map argument names to numbers, text, true/false or lists of them"


def _lists(x):
    return [_lists(i) for i in x] if isinstance(x, (list, tuple)) else x


def _image_size(v):
    if not (isinstance(v, tuple) and len(v) == 2 and all(is_int(d) and 1 <= d <= MAX_IMAGE_SIDE for d in v)):
        return f"must be (height, width) in pixels, each from 1 to {MAX_IMAGE_SIDE}"


def _run_name(v):
    """A run folder name: one plain folder inside runs_dir, never a path that leaves it."""
    if not isinstance(v, str):
        return "must be a folder name"
    if not v or len(v) > MAX_NAME_LENGTH:
        return f"must be 1 to {MAX_NAME_LENGTH} characters"
    if (v in (".", "..") or any(c in v for c in "/\\") or any(ord(c) < 32 or ord(c) == 127 for c in v)
            or v.startswith("-")):
        return "must be a single folder name (no / or \\, not . or .., no control characters, not starting with -)"


def _augment(v):
    if not isinstance(v, AugmentConfig):
        return "must be flip, translate, cutout and flip_seed"


# The fields that hold floats (ints given for them, as JSON writes 1.0, are taken as floats).
_FLOATS = {"time_budget", "val_split", "lr", "momentum", "weight_decay", "bias_lr_scale", "muon_lr", "muon_momentum",
           "warmup_epochs", "label_smoothing", "ema"}

# field -> check returning None when the value is fine, else what it must be.
_CHECKS = {
    "data": _optional(_text),
    "val_split": _float_in(0.0, 1.0),
    "limit": _optional(_int_in(1)),
    "image_size": _optional(_image_size),
    "channels": _optional(_one_of(CHANNELS)),
    "normalize": _one_of(NORMALIZATIONS),
    "stream": _boolean,
    "memory_budget_mb": _optional(_int_in(1)),
    "loader_workers": _int_in(0, 256),
    "model": _model,
    "model_args": _model_args,
    "epochs": _int_in(1, MAX_EPOCHS),
    "last_epoch_steps": _int_in(0, 10**9),
    "time_budget": _optional(_float_in(0.0, 30 * 24 * 3600.0, low_open=True)),
    "batch_size": _int_in(1, 1_000_000),
    "optimizer": _one_of(OPTIMIZERS),
    "lr": _float_in(0.0, None, low_open=True),
    "momentum": _float_in(0.0, 1.0),
    "weight_decay": _float_in(0.0, None),
    "bias_lr_scale": _float_in(0.0, None, low_open=True),
    "muon_lr": _float_in(0.0, None, low_open=True),
    "muon_momentum": _float_in(0.0, 1.0),
    "bias_decay": _boolean,
    "whiten_bias_epochs": _int_in(0, MAX_EPOCHS),
    "schedule": _one_of(SCHEDULES),
    "warmup_epochs": _float_in(0.0, None),
    "label_smoothing": _float_in(0.0, 1.0),
    "ema": _float_in(0.0, 1.0),
    "augment": _augment,
    "precision": _one_of(PRECISIONS),
    "channels_last": _boolean,
    "compile": _boolean,
    "device": _one_of(DEVICES),
    "eval_batch_size": _int_in(1, 1_000_000),
    "tta": _one_of(TTA_LEVELS),
    "engine": _one_of(ENGINE_NAMES),
    "sync_bn": _boolean,
    "dist_backend": _one_of(DIST_BACKENDS),
    "seed": _int_in(0, 2**32 - 1),
    "recipe": _text,
    "runs_dir": _text,
    "name": _optional(_run_name),
}
