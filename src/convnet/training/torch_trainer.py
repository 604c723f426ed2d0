"""The torch engine: trains any registered model from a batch source, in bf16 where it pays.

Each epoch's randomness (order, augmentation, dropout) comes from a generator seeded with
`epoch_seed(seed, epoch)`: a run resumed after epoch k repeats exactly what the uninterrupted
run did. The hot loop runs no per-image Python: batches arrive whole from the source
(data.batches) and are augmented as a whole (data.augment).
"""
from __future__ import annotations

import math
import reprlib
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from convnet.checks import is_int
from convnet.data.augment import augment_batch
from convnet.data.batches import batch_source
from convnet.data.dataset import Dataset
from convnet.data.normalize import normalize
from convnet.data.streaming import StreamedSplit
from convnet.errors import CheckpointError
from convnet.inference.allocator import keep_freed_memory
from convnet.inference.model_file import build_model, save_model
from convnet.inference.runtime import autocast, autocast_dtype, batched_logits, resolve_device
from convnet.training.config import TrainConfig
from convnet.training.distributed import (
    SINGLE,
    Group,
    device_of,
    on_rank_0,
    scaled_loss,
    shard,
    sum_over_ranks,
    use_global_batchnorm,
)
from convnet.training.ema import WeightAverage
from convnet.training.loop import EpochLoop, TrainData, TrainingDiverged, epoch_seed, model_info
from convnet.training.optim import build_optimizer, lr_factors, whitening_layer
from convnet.training.run_folder import RunFolder
from convnet.training.schedule import lr_factor
from convnet.training.state_file import check_optimizer, check_tensors

INIT_SAMPLE = 5000  # training images a data-dependent initialisation sees (airnet's whitening)...
INIT_SAMPLE_BYTES = 2**28  # ...at most this many bytes of them as float32 (5,000 up to 64x64 RGB; ~445 at 224x224)


class TorchTrainer(EpochLoop):
    """The torch engine."""

    def __init__(self, config: TrainConfig, data: TrainData, run: RunFolder, progress: bool, group: Group = SINGLE):
        super().__init__(config, data, run, progress and group.main)
        self.group = group  # one process, or this process's rank in a torchrun launch (training.distributed)
        self.device = device_of(group, resolve_device(config.device))
        keep_freed_memory()
        self.amp = autocast_dtype(config.precision, self.device, config.compile)
        # A streamed split is read by loader workers, each rank only its slice of a global batch (data.streaming).
        self.source = batch_source(data.train, config.batch_size, self.device, config.loader_workers,
                                   (lambda n: shard(group, n)) if group.active else None)
        torch.manual_seed(config.seed)
        self.model = build_model(model_info(config, data, {}))
        if hasattr(self.model, "init_from_data"):
            c, h, w = data.train.image_shape
            n = min(INIT_SAMPLE, max(1, INIT_SAMPLE_BYTES // (4 * c * h * w)))
            self.model.init_from_data(normalize(self.source.sample(n, config.seed), data.mean, data.std))
        self.model.to(self.device)
        if config.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(self.model, config)
        # Past --whiten-bias-epochs the whitening layer detaches its bias (`train_epoch` tells it when). DDP needs
        # a fixed set of learning parameters, so under torchrun the bias keeps its gradient and its zero rate alone
        # holds it still.
        self.whitening = None if group.active else whitening_layer(self.model, config)
        self.steps_per_epoch = self.source.steps_per_epoch
        self.report_every = max(1, min(25, self.steps_per_epoch // 20))  # progress-bar updates: ~20 per epoch
        last = min(self.stops_after(config.epochs - 1) or self.steps_per_epoch, self.steps_per_epoch)
        total, warmup = ((config.epochs - 1) * self.steps_per_epoch + last,
                         round(config.warmup_epochs * self.steps_per_epoch))

        def schedule(step: int) -> float:
            return lr_factor(step, total, warmup, config.schedule)

        # one per parameter group
        self.lr_factors = lr_factors(self.optimizer, self.model, config, self.steps_per_epoch, schedule)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.lr_factors)
        self.ema = WeightAverage(self.model, config.ema) if config.ema else None
        self.forward = self._wrapped(config)

    def _wrapped(self, config: TrainConfig) -> nn.Module:
        """What the training step calls: the model, under DDP on several processes, compiled if asked."""
        forward = self.model
        if self.group.active:
            if config.sync_bn:
                use_global_batchnorm(self.model)
            cuda = self.device.type == "cuda"
            forward = DistributedDataParallel(self.model, device_ids=[self.device.index] if cuda else None)
        return torch.compile(forward) if config.compile else forward

    def restore(self, state: dict) -> None:
        """Continue from a saved state (see `save`).

        Raises:
            CheckpointError: a state that does not fit this run's model, optimizer or epochs.
        """
        try:
            self._restore(state)
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
            # The checks in _restore name what is wrong in a few words; anything else is named by its
            # type, torch's own (multi-line) text flattened onto the one line.
            reason = str(e) if type(e) is ValueError else f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
            raise CheckpointError(f"{self.run.path}'s resume state does not fit the run in its config.json ({reason}); "
                                  "start a new run.") from None

    def _restore(self, state: dict) -> None:
        # Everything is checked against the live model and optimizer before anything is loaded:
        # what passes loads and steps like a state this version wrote.
        epoch, history = state["epoch"], state["history"]
        self.run.check_history(history)
        if not is_int(epoch) or not 0 <= epoch <= self.config.epochs or len(history) != epoch:
            raise ValueError(f"epoch {reprlib.repr(epoch)} with {len(history)} history rows")
        check_tensors("model", state["model"], self.model.state_dict())
        _drop_whitening_epochs(state["optimizer"])
        check_optimizer(state["optimizer"], self.optimizer)
        if self.ema is not None:
            check_tensors("EMA weights", state["ema"], self.ema.model.state_dict())
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        # The state file keeps tensors contiguous; momentum buffers go back to their parameter's
        # layout (channels-last), or the optimizer's kernels would take another, inexact path.
        for param, buffers in self.optimizer.state.items():
            for key, value in buffers.items():
                if isinstance(value, torch.Tensor) and value.shape == param.shape and value.stride() != param.stride():
                    buffers[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)
        # The schedule is a pure function of the step, rebuilt from config.json rather than from
        # saved numbers: the run repeats exactly, and a learning rate edited there takes effect.
        steps = state["epoch"] * self.steps_per_epoch
        self.scheduler.last_epoch = steps
        for group, base, factor in zip(self.optimizer.param_groups, self.scheduler.base_lrs, self.lr_factors,
                                       strict=True):
            group["initial_lr"] = base
            group["lr"] = base * factor(steps)
        if self.ema is not None:
            self.ema.model.load_state_dict(state["ema"])
        self.history = [dict(row) for row in history]
        self.start_epoch = epoch

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.model if self.ema is not None else self.model

    def train_epoch(self, epoch: int, max_steps: int | None = None,
                    on_step: Callable[[], None] | None = None) -> tuple[float, float, float]:
        """One pass over the training set (or its first `max_steps` steps: training.budget's probe,
        which times each step through `on_step`, called as each one ends)."""
        cfg = self.config
        gen = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch))
        torch.manual_seed(epoch_seed(cfg.seed, epoch))  # dropout and other global-RNG layers
        self.model.train()
        if self.whitening is not None:
            self.whitening.bias_learns = epoch < cfg.whiten_bias_epochs
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        seen, start = 0, time.perf_counter()
        bar = self.progress_bar(epoch)
        for step, (idx, images, y) in enumerate(self.source.batches(epoch, gen)):
            if max_steps is not None and step >= max_steps:
                break
            # Every rank augments the whole global batch (the same draws as one process), then
            # trains on its own slice of it.
            x = normalize(augment_batch(images, cfg.augment, gen, epoch, idx), self.data.mean, self.data.std)
            n, weight = len(y), 1.0
            if self.group.active:
                part = shard(self.group, n)
                if part.start == part.stop:  # a last batch smaller than the number of ranks: this rank
                    part, weight = slice(0, 1), 0.0  # still steps with DDP, on one image that counts for nothing
                x, y = x[part], y[part]
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(self.device, self.amp):
                logits = self.forward(x).float()
            if self.group.active:
                loss = scaled_loss(self.group, logits, y, n, cfg.label_smoothing) * weight
                loss_sum += loss.detach() * (n / self.group.world)  # this rank's sum of per-image losses
            else:
                loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
                loss_sum += loss.detach() * n
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update(self.model)
            correct += (logits.argmax(1) == y).sum() * int(weight)
            seen += n
            if step % self.report_every == 0 or seen == len(self.source):
                total_loss, total_correct = self._summed(loss_sum, correct)  # a device sync: only every few steps
                mean_loss = total_loss / seen
                if not math.isfinite(mean_loss):
                    raise TrainingDiverged(
                        f"The loss became {mean_loss} in epoch {epoch + 1}; the last good checkpoint "
                        f"(epoch {epoch}) is kept in {self.run.path}; lower --lr and start again."
                    )
                bar.set_postfix(loss=f"{mean_loss:.3f}", acc=f"{total_correct / seen:.3f}", refresh=False)
            bar.update(n)
            if on_step is not None:
                on_step()
        bar.close()
        total_loss, total_correct = self._summed(loss_sum, correct)
        return total_loss / seen, total_correct / seen, time.perf_counter() - start

    def _summed(self, loss_sum: torch.Tensor, correct: torch.Tensor) -> tuple[float, float]:
        """(sum of losses, number correct) over every rank's images so far."""
        if not self.group.active:
            return loss_sum.item(), correct.item()
        total = sum_over_ranks(self.group, torch.stack([loss_sum.double(), correct.double()]))
        return total[0].item(), total[1].item()

    def validate(self, tta: int = 0) -> tuple[float, float] | tuple[None, None]:
        if self.data.val is None:
            return None, None
        val = self.data.val
        labels = val.labels
        if self.group.active:  # each rank scores its slice of the split; the sums are added up
            part = shard(self.group, len(labels))
            logits = self._logits(val, part, tta)
            local = torch.stack([F.cross_entropy(logits, labels[part], reduction="sum").double(),
                                 (logits.argmax(1) == labels[part]).sum().double()])
            loss_sum, hits = sum_over_ranks(self.group, local).tolist()
            return loss_sum / len(labels), hits / len(labels)
        logits = self._logits(val, slice(None), tta)
        return F.cross_entropy(logits, labels).item(), (logits.argmax(1) == labels).float().mean().item()

    def _logits(self, split: Dataset | StreamedSplit, part: slice, tta: int) -> torch.Tensor:
        """Logits of the split's images `part`; a streamed split is read from disk a batch at a time."""
        cfg = self.config

        def logits(images: torch.Tensor) -> torch.Tensor:
            return batched_logits(self.eval_model, images, self.data.mean, self.data.std, cfg.eval_batch_size, self.amp,
                                  tta, cfg.channels_last)

        if isinstance(split, Dataset):
            return logits(split.images[part])
        return torch.cat([logits(split.read(rows))
                          for rows in torch.arange(len(split))[part].split(cfg.eval_batch_size)])

    @property
    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def save_model(self, metrics: dict) -> None:
        if self.group.main:  # one writer per run folder
            save_model(self.run.model_path, self.eval_model, model_info(self.config, self.data, metrics))

    def save(self, epoch: int) -> None:
        """Rank 0 writes; every rank learns whether it could, so none trains on alone."""
        on_rank_0(self.group, lambda: self.write_checkpoint(self.run, epoch),
                  "Rank 0 could not write the run folder (its error says why); every rank stopped.")

    def write_checkpoint(self, run: RunFolder, epoch: int) -> None:
        """What each epoch leaves in `run`: the model file, history.csv and the resume state after `epoch`.

        training.budget's probe times this same call, into a folder it then deletes, before any
        epoch has ended (the model file's metrics are then empty).
        """
        # The resume state last: a kill before it leaves the state one epoch behind the model file
        # and history.csv, and resuming from it redoes that epoch identically (and rewrites both).
        save_model(run.model_path, self.eval_model,
                   model_info(self.config, self.data, self.history[-1] if self.history else {}))
        run.write_history(self.history)
        run.save_state({
            "epoch": epoch + 1,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "ema": self.ema.model.state_dict() if self.ema is not None else None,
            "history": self.history,
        })


def _drop_whitening_epochs(saved_optimizer) -> None:
    """Runs written before the whitening layer detached its own bias kept `"epochs": n` in the bias's
    parameter group, a setting nothing reads now: it is dropped, so that those runs still resume."""
    groups = saved_optimizer.get("param_groups") if isinstance(saved_optimizer, dict) else None
    for group in groups if isinstance(groups, list) else []:
        if isinstance(group, dict):
            group.pop("epochs", None)
