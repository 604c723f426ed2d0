"""The contract every training engine fulfils, and the epoch loop they share.

An engine (`TorchTrainer`, `ScratchTrainer`) trains one epoch, validates, and saves; the loop
around it (`EpochLoop.fit`) runs the epochs, prints one line per epoch, keeps the history and
asks for a checkpoint after each. `training.train` picks the engine by the config's name.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm  # not tqdm.auto: in a notebook without ipywidgets it prints a warning on import

from convnet.data.dataset import Dataset
from convnet.data.streaming import StreamedSplit
from convnet.errors import ConvnetError
from convnet.formats import ModelInfo
from convnet.training.config import TrainConfig
from convnet.training.run_folder import RunFolder


class TrainingDiverged(ConvnetError):
    """The loss became NaN or infinite."""


@dataclass(frozen=True)
class TrainData:
    train: Dataset | StreamedSplit  # held in memory, or read from disk batch by batch (data.streaming)
    val: Dataset | StreamedSplit | None
    mean: tuple[float, ...]  # normalization, per channel on the 0..1 scale
    std: tuple[float, ...]


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    history: list[dict]  # one row per epoch, as history.csv holds them (numbers, not text)
    metrics: dict  # the last epoch's row, plus val_acc_tta when TTA was asked for


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of everything random in one epoch (order, augmentation, dropout): a run resumed
    after epoch k draws exactly what the uninterrupted run drew."""
    return seed * 1_000_003 + epoch


def model_info(config: TrainConfig, data: TrainData, metrics: dict) -> ModelInfo:
    """What the model file says about a model trained by `config` on `data`."""
    c, h, w = data.train.image_shape
    return ModelInfo(
        model=config.model,
        model_args=dict(config.model_args),
        classes=tuple(data.train.classes),
        in_chans=c,
        input_size=(h, w),
        mean=data.mean,
        std=data.std,
        data_source=data.train.source,
        metrics=metrics,
    )


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


class EpochLoop(ABC):
    """Epochs, per-epoch lines, history and checkpoints, around an engine's epoch and save."""

    def __init__(self, config: TrainConfig, data: TrainData, run: RunFolder, progress: bool):
        self.config, self.data, self.run, self.progress = config, data, run, progress
        self.history: list[dict] = []
        self.start_epoch = 0

    @abstractmethod
    def train_epoch(self, epoch: int, max_steps: int | None = None) -> tuple[float, float, float]:
        """One pass over the training set, or its first `max_steps` steps (`fit` stops the last
        epoch early where `last_epoch_steps` is set; an engine that cannot do that refuses the setting).
        Returns (mean loss, accuracy, seconds)."""

    @abstractmethod
    def validate(self, tta: int = 0) -> tuple[float, float] | tuple[None, None]:
        """(loss, accuracy) on the validation split, or (None, None) without one."""

    @abstractmethod
    def save(self, epoch: int) -> None:
        """Checkpoint after `epoch` (0-based): model file, history and whatever resuming needs."""

    @abstractmethod
    def save_model(self, metrics: dict) -> None:
        """Write the model file with these final metrics."""

    @property
    @abstractmethod
    def lr(self) -> float:
        """The learning rate of the last step."""

    def fit(self) -> dict:
        cfg = self.config
        for epoch in range(self.start_epoch, cfg.epochs):
            cut = self.stops_after(epoch)
            train_loss, train_acc, seconds = (self.train_epoch(epoch) if cut is None
                                              else self.train_epoch(epoch, max_steps=cut))
            val_loss, val_acc = self.validate()
            row = dict(
                epoch=epoch + 1, train_loss=round(train_loss, 6), train_acc=round(train_acc, 6),
                val_loss=_rounded(val_loss), val_acc=_rounded(val_acc),
                lr=self.lr, seconds=round(seconds, 3), images_per_s=round(self.images_in(epoch) / seconds, 1),
            )
            self.history.append(row)
            self.save(epoch)
            val_text = "" if val_acc is None else f"  val loss {val_loss:.4f} acc {val_acc:.4f}"
            self.say(f"epoch {epoch + 1}/{cfg.epochs}  train loss {train_loss:.4f} acc {train_acc:.4f}{val_text}  "
                     f"{seconds:.1f}s ({row['images_per_s']:.0f} img/s)")
        metrics = dict(self.history[-1])
        if cfg.tta and self.data.val is not None:
            metrics["val_acc_tta"] = round(self.validate(cfg.tta)[1], 6)
            self.say(f"validation accuracy with TTA level {cfg.tta}: {metrics['val_acc_tta']:.4f}")
            self.save_model(metrics)
        return metrics

    def stops_after(self, epoch: int) -> int | None:
        """The steps after which `epoch` (0-based) stops: `last_epoch_steps` in the last epoch,
        else None (all of them)."""
        cfg = self.config
        return (cfg.last_epoch_steps or None) if epoch == cfg.epochs - 1 else None

    def images_in(self, epoch: int) -> int:
        """How many training images `epoch` (0-based) passes."""
        cut, n = self.stops_after(epoch), len(self.data.train)
        return n if cut is None else min(n, cut * self.config.batch_size)

    def progress_bar(self, epoch: int) -> tqdm:
        return tqdm(total=self.images_in(epoch), desc=f"epoch {epoch + 1}/{self.config.epochs}", unit="img",
                    disable=not self.progress, leave=False, dynamic_ncols=True)

    def say(self, text: str) -> None:
        if self.progress:
            tqdm.write(text)
