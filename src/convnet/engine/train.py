"""The training loop that the CLI, the Python API and the server all call.

Whole splits sit on the device as uint8 tensors; every batch is cut from them by index and
augmented as a whole (data.augment), so the hot loop runs no per-image Python. Each epoch's
randomness (order, augmentation, dropout) comes from a generator seeded with (seed, epoch):
a run resumed after epoch k therefore repeats exactly what the uninterrupted run did.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from convnet.data.augment import augment_batch
from convnet.data.dataset import Dataset, channel_stats, limit_dataset, split_dataset
from convnet.data.sources import available_splits, load_dataset
from convnet.engine.allocator import keep_freed_memory
from convnet.engine.checkpoint import ModelInfo, save_model
from convnet.engine.config import TrainConfig
from convnet.engine.ema import WeightAverage
from convnet.engine.inference import (
    autocast,
    autocast_dtype,
    batched_logits,
    normalize,
    resolve_device,
)
from convnet.engine.optim import build_optimizer
from convnet.engine.run_folder import RunFolder, read_history
from convnet.engine.schedule import lr_factor
from convnet.errors import ConvnetError
from convnet.models import create_model
from convnet.viz.grid import save_image_grid
from convnet.viz.plots import plot_curves


class TrainingDiverged(ConvnetError):
    """The loss became NaN or infinite."""


@dataclass(frozen=True)
class TrainData:
    train: Dataset
    val: Dataset | None
    mean: tuple[float, ...]  # normalization, per channel on the 0..1 scale
    std: tuple[float, ...]


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    history: list[dict]
    metrics: dict  # the last epoch's row, plus val_acc_tta when TTA was asked for


def prepare_data(config: TrainConfig) -> TrainData:
    """Load the training data and its validation split (the data's own, or carved from train)."""
    size, chans = config.image_size, config.channels
    train = load_dataset(config.data, "train", image_size=size, channels=chans)
    # Every later split is converted to the training images' size and channels.
    size, chans = tuple(train.images.shape[2:]), train.images.shape[1]
    if "val" in available_splits(config.data):
        val = load_dataset(config.data, "val", image_size=size, channels=chans)
    elif config.val_split > 0:
        train, val = split_dataset(train, config.val_split, config.seed)
    else:
        val = None
    if config.limit is not None:
        train = limit_dataset(train, config.limit, config.seed)
    if config.normalize == "unit":
        mean, std = (0.0,) * chans, (1.0,) * chans
    else:
        mean, std = channel_stats(train.images)
        std = tuple(max(v, 1e-3) for v in std)
    return TrainData(train, val, mean, std)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def model_info(config: TrainConfig, data: TrainData, metrics: dict) -> ModelInfo:
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


class EpochLoop:
    """The loop both engines share: epochs, per-epoch lines, history and checkpoints.

    An engine provides `train_epoch(epoch) -> (loss, accuracy, seconds)`, `validate(tta) ->
    (loss, accuracy)`, `save(epoch)`, `save_model(metrics)` and `lr`.
    """

    def __init__(self, config: TrainConfig, data: TrainData, run: RunFolder, progress: bool):
        self.config, self.data, self.run, self.progress = config, data, run, progress
        self.history: list[dict] = []
        self.start_epoch = 0

    def fit(self) -> dict:
        cfg = self.config
        for epoch in range(self.start_epoch, cfg.epochs):
            train_loss, train_acc, seconds = self.train_epoch(epoch)
            val_loss, val_acc = self.validate()
            row = dict(
                epoch=epoch + 1, train_loss=round(train_loss, 6), train_acc=round(train_acc, 6),
                val_loss=None if val_loss is None else round(val_loss, 6), val_acc=None if val_acc is None else round(val_acc, 6),
                lr=self.lr, seconds=round(seconds, 3), images_per_s=round(len(self.data.train) / seconds, 1),
            )
            self.history.append(row)
            self.save(epoch)
            val_text = "" if val_acc is None else f"  val loss {val_loss:.4f} acc {val_acc:.4f}"
            self.say(f"epoch {epoch + 1}/{cfg.epochs}  train loss {train_loss:.4f} acc {train_acc:.4f}{val_text}  {seconds:.1f}s ({row['images_per_s']:.0f} img/s)")
        metrics = dict(self.history[-1])
        if cfg.tta and self.data.val is not None:
            metrics["val_acc_tta"] = round(self.validate(cfg.tta)[1], 6)
            self.say(f"validation accuracy with TTA level {cfg.tta}: {metrics['val_acc_tta']:.4f}")
            self.save_model(metrics)
        return metrics

    def progress_bar(self, epoch: int) -> tqdm:
        return tqdm(total=len(self.data.train), desc=f"epoch {epoch + 1}/{self.config.epochs}", unit="img",
                    disable=not self.progress, leave=False, dynamic_ncols=True)

    def say(self, text: str) -> None:
        if self.progress:
            tqdm.write(text)


class _Trainer(EpochLoop):
    """The torch engine."""

    def __init__(self, config: TrainConfig, data: TrainData, run: RunFolder, progress: bool):
        super().__init__(config, data, run, progress)
        self.device = resolve_device(config.device)
        keep_freed_memory()
        self.amp = autocast_dtype(config.precision, self.device)
        c, h, w = data.train.image_shape
        torch.manual_seed(config.seed)
        self.model = create_model(config.model, num_classes=len(data.train.classes), in_chans=c, input_size=(h, w), **config.model_args)
        if hasattr(self.model, "init_from_data"):
            # Data-dependent initialisation (airnet's patch whitening) on 5,000 training images drawn
            # with the run's seed: image folders are sorted by class, so the first ones would be one class.
            pick = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(config.seed))[:5000]
            self.model.init_from_data(normalize(data.train.images[pick], data.mean, data.std))
        self.model.to(self.device)
        if config.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(self.model, config)
        self.steps_per_epoch = math.ceil(len(data.train) / config.batch_size)
        self.report_every = max(1, min(25, self.steps_per_epoch // 20))  # progress-bar updates: ~20 per epoch
        total, warmup = config.epochs * self.steps_per_epoch, round(config.warmup_epochs * self.steps_per_epoch)
        self.lr_factor = lambda step: lr_factor(step, total, warmup, config.schedule)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.lr_factor)
        self.ema = WeightAverage(self.model, config.ema) if config.ema else None
        self.forward = torch.compile(self.model) if config.compile else self.model
        self.images = data.train.images.to(self.device)
        self.labels = data.train.labels.to(self.device)

    def restore(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        # The schedule is a pure function of the step, rebuilt from config.json rather than from
        # saved numbers: the run repeats exactly, and a learning rate edited there takes effect.
        steps = state["epoch"] * self.steps_per_epoch
        self.scheduler.last_epoch = steps
        for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs):
            group["initial_lr"] = base
            group["lr"] = base * self.lr_factor(steps)
        if self.ema is not None:
            self.ema.model.load_state_dict(state["ema"])
        self.history = state["history"]
        self.start_epoch = state["epoch"]

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.model if self.ema is not None else self.model

    def train_epoch(self, epoch: int) -> tuple[float, float, float]:
        """One pass over the training set. Returns (mean loss, accuracy, seconds)."""
        cfg = self.config
        gen = epoch_generator(cfg.seed, epoch)
        torch.manual_seed(cfg.seed * 1_000_003 + epoch)  # dropout and other global-RNG layers
        order = torch.randperm(len(self.labels), generator=gen).to(self.device)
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        seen, start = 0, time.perf_counter()
        bar = self.progress_bar(epoch)
        for step, i in enumerate(range(0, len(order), cfg.batch_size)):
            idx = order[i : i + cfg.batch_size]
            x = augment_batch(self.images[idx], cfg.augment, gen, epoch, idx)
            x = normalize(x, self.data.mean, self.data.std)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = self.labels[idx]
            with autocast(self.device, self.amp):
                logits = self.forward(x).float()
            loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update(self.model)
            loss_sum += loss.detach() * len(y)
            correct += (logits.argmax(1) == y).sum()
            seen += len(y)
            if step % self.report_every == 0 or seen == len(order):
                mean_loss = loss_sum.item() / seen  # a device sync: only every few steps
                if not math.isfinite(mean_loss):
                    raise TrainingDiverged(
                        f"The loss became {mean_loss} in epoch {epoch + 1}; the last good checkpoint "
                        f"(epoch {epoch}) is kept in {self.run.path}; lower --lr and start again."
                    )
                bar.set_postfix(loss=f"{mean_loss:.3f}", acc=f"{correct.item() / seen:.3f}", refresh=False)
            bar.update(len(y))
        bar.close()
        return loss_sum.item() / seen, correct.item() / seen, time.perf_counter() - start

    def validate(self, tta: int = 0) -> tuple[float, float] | tuple[None, None]:
        if self.data.val is None:
            return None, None
        logits = batched_logits(self.eval_model, self.data.val.images, self.data.mean, self.data.std, self.config.eval_batch_size, self.amp, tta, self.config.channels_last)
        labels = self.data.val.labels
        return F.cross_entropy(logits, labels).item(), (logits.argmax(1) == labels).float().mean().item()

    @property
    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def save_model(self, metrics: dict) -> None:
        save_model(self.run.model_path, self.eval_model, model_info(self.config, self.data, metrics))

    def save(self, epoch: int) -> None:
        # The model file first: a kill between the two writes leaves state.pt one epoch behind, and
        # resuming from it redoes that epoch identically.
        self.save_model(self.history[-1])
        self.run.save_state({
            "epoch": epoch + 1,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "ema": self.ema.model.state_dict() if self.ema is not None else None,
            "history": self.history,
        })
        self.run.write_history(self.history)


def train(config: TrainConfig, progress: bool = True) -> RunResult:
    """Train a model as `config` says and write its run folder (see engine.run_folder)."""
    data = prepare_data(config)
    run = RunFolder.create(config)
    if config.engine == "scratch":
        from convnet.engine.scratch_fit import ScratchTrainer as engine
    else:
        engine = _Trainer
    try:
        trainer = engine(config, data, run, progress)
    except ConvnetError:
        run.discard()  # a setting the model refuses: leave no half-made run folder behind
        raise
    _write_samples(run, data.train)
    return _fit(trainer, run)


def resume(run_dir: str | Path, progress: bool = True) -> RunResult:
    """Continue a run after Ctrl-C or a kill; it ends as the uninterrupted run would have."""
    run = RunFolder.open(run_dir)
    config = run.read_config()
    if config.engine == "scratch":
        raise ConvnetError("Runs of the scratch engine cannot be resumed; start the run again (it is a small-data engine).")
    trainer = _Trainer(config, prepare_data(config), run, progress)
    state = run.load_state()
    if state is not None:
        trainer.restore(state)
    if trainer.start_epoch >= config.epochs:
        raise ConvnetError(f"{run.path} already finished its {config.epochs} epochs; nothing to resume.")
    trainer.say(f"resuming {run.path} after epoch {trainer.start_epoch}")
    return _fit(trainer, run)


def _fit(trainer: EpochLoop, run: RunFolder) -> RunResult:
    metrics = trainer.fit()
    plot_curves(trainer.history, run.curves_path)
    return RunResult(run.path, read_history(run.history_path), metrics)


def _write_samples(run: RunFolder, ds: Dataset, n: int = 25) -> None:
    n = min(n, len(ds))
    save_image_grid(ds.images[:n], [ds.classes[i] for i in ds.labels[:n].tolist()], run.samples_path, title="first training images")

