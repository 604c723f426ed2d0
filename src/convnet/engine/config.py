"""Training configuration: one frozen dataclass that says everything a run needs to repeat.

`config.json` in a run folder is `asdict(TrainConfig)`; `TrainConfig.from_dict` reads it back.
The defaults are the tutorial's: its CNN, CIFAR-10, Adam at 1e-3, cross-entropy on logits,
10 epochs, batch 32.
"""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field

from convnet.data.augment import AugmentConfig
from convnet.errors import ConfigError


@dataclass(frozen=True)
class TrainConfig:
    # data
    data: str | None = None  # a path, or "cifar10" (None), "fashion-mnist", "sample"
    val_split: float = 0.1  # fraction carved (seeded, stratified) when the data has no val split
    limit: int | None = None  # train on a seeded, stratified subset of this many images
    image_size: tuple[int, int] | None = None  # (H, W); None: the data's own size
    channels: int | None = None  # 1 or 3; None: the data's own
    normalize: str = "unit"  # "unit": x/255 as in the tutorial; "standard": per-channel mean/std of the training set
    # model
    model: str = "tutorial"  # a name from convnet.models.list_models()
    model_args: dict = field(default_factory=dict)  # the architecture's own arguments, e.g. {"arch": "c32-p-f-d64"}
    # optimisation
    epochs: int = 10
    batch_size: int = 32
    optimizer: str = "adam"  # adam | sgd (Nesterov momentum) | muon (Muon for conv filters, SGD for the rest)
    lr: float = 1e-3  # peak learning rate, per batch as given (no scaling by batch size)
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0  # L2 on weights (decoupled for adam: AdamW); none on biases and norms unless bias_decay
    bias_lr_scale: float = 1.0  # learning-rate multiplier for biases and norm parameters (airbench: 64)
    muon_lr: float = 0.24  # muon only: step size of the orthogonalized filter updates (airbench94_muon)
    muon_momentum: float = 0.6  # muon only: Nesterov momentum of the filter updates (airbench94_muon)
    bias_decay: bool = False  # decay biases and norm shifts too, by as much per step as the weights (airbench)
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
    tta: int = 0  # test-time augmentation level for the final validation (see engine.tta)
    engine: str = "torch"  # torch | scratch (the NumPy reference engine, tutorial and spec models)
    seed: int = 0
    recipe: str = "tutorial"  # the preset this config started from (see engine.recipes)
    # output
    runs_dir: str = "runs"
    name: str | None = None  # run folder name; None: <model>-<date>-<time>

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}."),
            (self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}."),
            (self.lr > 0, f"--lr must be positive, got {self.lr}."),
            (0.0 <= self.val_split < 1.0, f"--val-split must be in [0, 1), got {self.val_split}."),
            (self.limit is None or self.limit > 0, f"--limit must be positive, got {self.limit}."),
            (self.optimizer in ("adam", "sgd", "muon"), f"--optimizer must be adam, sgd or muon, got {self.optimizer!r}."),
            (self.schedule in ("constant", "linear"), f"--schedule must be constant or linear, got {self.schedule!r}."),
            (self.precision in ("auto", "bf16", "fp32"), f"--precision must be auto, bf16 or fp32, got {self.precision!r}."),
            (self.normalize in ("unit", "standard"), f"--normalize must be unit or standard, got {self.normalize!r}."),
            (self.device in ("auto", "cpu", "cuda", "mps"), f"--device must be auto, cpu, cuda or mps, got {self.device!r}."),
            (self.engine in ("torch", "scratch"), f"--engine must be torch or scratch, got {self.engine!r}."),
            (0.0 <= self.label_smoothing < 1.0, f"--label-smoothing must be in [0, 1), got {self.label_smoothing}."),
            (0.0 <= self.ema < 1.0, f"--ema must be in [0, 1), got {self.ema}."),
            (self.channels in (None, 1, 3), f"--channels must be 1 or 3, got {self.channels}."),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"config.json has unknown fields {sorted(unknown)}; it was written by another convnet version.")
        d = dict(d)
        d["augment"] = AugmentConfig(**d.get("augment", {}))
        for key in ("image_size",):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)
