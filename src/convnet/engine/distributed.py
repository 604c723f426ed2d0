"""Training one model on several processes with PyTorch's own engine: torch.distributed + DDP.

    torchrun --nproc_per_node=2 -m convnet train ...                 two processes on this machine
    torchrun --nnodes=2 --nproc_per_node=4 --rdzv-endpoint=HOST:29500 -m convnet train ...

torchrun starts the processes and sets RANK, WORLD_SIZE and LOCAL_RANK; `join` reads them and
joins the process group (gloo on the CPU, NCCL on CUDA, the device following LOCAL_RANK).
Without them (a plain `convnet train`) nothing here does anything.

What a distributed run keeps the same as one process:
- the global batch and learning rate are the user's: each step, every rank cuts the same global
  batch from the epoch's seeded permutation, draws the same augmentation for all of it, and
  trains on its own contiguous slice (`shard`); the loss is scaled so that DDP's average of the
  ranks' gradients is the gradient of the global batch's mean loss, even for a last, uneven batch;
- losses, accuracies and the divergence check are summed over the ranks, so every rank sees the
  same numbers and stops at the same step;
- BatchNorm: with --sync-bn, `GlobalBatchNorm2d` normalises with the whole global batch's
  statistics (torch's SyncBatchNorm runs on CUDA only; this one runs on any backend), so the run
  matches one process within floating-point reordering (except in a last batch with fewer images
  than ranks: a rank left without one steps on a filler image whose loss counts for nothing but
  which does enter the BatchNorm statistics); without it, each rank normalises its slice on its
  own, as plain DDP does;
- only rank 0 writes the run folder, prints, and shows the progress bar; checkpoints hold the
  unwrapped model, so `--resume` works with any number of processes.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from convnet.engine.config import TrainConfig
from convnet.errors import ConfigError

T = TypeVar("T")
MAX_TEXT_BYTES = 4096  # longest text `broadcast_text` carries (a run folder's path)


@dataclass(frozen=True)
class Group:
    """This process's place in the run: rank `rank` of `world`; one process is rank 0 of 1."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0  # the process's index on its own machine: its GPU under CUDA

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


SINGLE = Group()  # a plain, one-process run


def _env_int(name: str, default: int | None = None) -> int:
    value = os.environ.get(name)
    if value is None and default is not None:
        return default
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"The environment variable {name}={value!r} is not a whole number; launch with torchrun, which sets it.") from None


def join(config: TrainConfig) -> Group:
    """The process group torchrun launched this process into, joined; one process: Group().

    Raises:
        ConfigError: a launch that cannot train as asked (a batch size the processes cannot
            share, NCCL without CUDA, the scratch engine), before any work.
    """
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return SINGLE
    rank, local_rank = _env_int("RANK"), _env_int("LOCAL_RANK", 0)
    if config.engine != "torch":
        raise ConfigError("Only the torch engine trains on several processes; drop --engine scratch or launch one process.")
    if config.batch_size % world:
        raise ConfigError(f"--batch-size {config.batch_size} cannot be shared by {world} processes; pick a multiple of {world} (it is the global batch).")
    backend = config.dist_backend
    if backend == "auto":
        backend = "nccl" if config.device in ("auto", "cuda") and torch.cuda.is_available() else "gloo"
    if backend == "nccl" and not torch.cuda.is_available():
        raise ConfigError("--dist-backend nccl needs CUDA GPUs and none is visible; use --dist-backend gloo (or auto) on CPUs.")
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return Group(rank, world, local_rank)


def finish(group: Group) -> None:
    """Wait until every rank is done (rank 0 writes the last files alone): a rank that tore its
    connections down while another still used them made gloo abort that process at exit."""
    if group.active and dist.is_initialized():
        dist.barrier()


def leave(group: Group) -> None:
    if group.active and dist.is_initialized():
        dist.destroy_process_group()


def device_of(group: Group, device: torch.device) -> torch.device:
    """Under CUDA each process takes the GPU its LOCAL_RANK names."""
    if group.active and device.type == "cuda":
        return torch.device("cuda", group.local_rank)
    return device


def shard(group: Group, n: int) -> slice:
    """This rank's contiguous part of n items: the first n % world ranks take one more."""
    base, extra = divmod(n, group.world)
    start = group.rank * base + min(group.rank, extra)
    return slice(start, start + base + (1 if group.rank < extra else 0))


def all_agree(group: Group, ok: bool) -> bool:
    """True on every rank when `ok` holds on every rank (so no rank waits for one that gave up)."""
    if not group.active:
        return ok
    flag = torch.tensor([1 if ok else 0], dtype=torch.int64, device=_comm_device())
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def on_rank_0(group: Group, work: Callable[[], T], stopped: str) -> T | None:
    """Run `work` on rank 0 alone; every rank learns whether it succeeded, so none waits for a
    rank that gave up.

    Returns:
        What `work` returned, on rank 0; None on the others.
    Raises:
        rank 0's own error on rank 0, and ConfigError(`stopped`) on the others, when `work` failed.
    """
    result, failure = None, None
    if group.main:
        try:
            result = work()
        except Exception as e:  # noqa: BLE001  (re-raised below, once every rank knows)
            failure = e
    if not all_agree(group, failure is None):
        raise failure or ConfigError(stopped)
    return result


def sum_over_ranks(group: Group, values: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of `values` over every rank (a copy; float64 so counts stay exact)."""
    if not group.active:
        return values
    total = values.detach().to(_comm_device(), torch.float64).clone()
    dist.all_reduce(total)
    return total.to(values.device)


def broadcast_text(group: Group, text: str) -> str:
    """Rank 0's `text` on every rank (as bytes in a tensor: nothing is pickled)."""
    if not group.active:
        return text
    data = text.encode()[:MAX_TEXT_BYTES] if group.main else b""
    size = torch.tensor([len(data)], dtype=torch.int64, device=_comm_device())
    dist.broadcast(size, src=0)
    buf = torch.zeros(MAX_TEXT_BYTES, dtype=torch.uint8, device=_comm_device())
    if group.main and data:
        buf[: len(data)] = torch.tensor(list(data), dtype=torch.uint8)
    dist.broadcast(buf, src=0)
    return bytes(buf[: int(size.item())].cpu().tolist()).decode()


def _comm_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


class _SumOverRanks(torch.autograd.Function):
    """y = the sum of x over every rank; the gradient of each rank's x is the sum of the ranks'
    gradients of y (every rank's loss depends on every rank's x through y)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        g = grad.clone()
        dist.all_reduce(g)
        return g


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that, in training, normalises with the statistics of the global batch.

    Each rank sums x and x^2 per channel over its slice; a differentiable all-reduce adds them up
    over the ranks, so both the forward pass and the gradients are those of one BatchNorm over the
    whole global batch. Running statistics are updated as torch's BatchNorm does (unbiased
    variance). In eval mode, or in one process, it is plain BatchNorm2d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        xf = x.float()
        count = torch.tensor([xf.numel() / xf.shape[1]], dtype=torch.float32, device=x.device)
        stats = torch.cat([xf.sum((0, 2, 3)), (xf * xf).sum((0, 2, 3)), count])
        stats = _SumOverRanks.apply(stats)
        c = xf.shape[1]
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c : 2 * c] / n - mean * mean).clamp_min(0)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach() * m)
                self.running_var.mul_(1 - m).add_(var.detach() * (n / (n - 1)).clamp_min(1) * m)
        y = (xf - mean[None, :, None, None]) * torch.rsqrt(var[None, :, None, None] + self.eps)
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)


def use_global_batchnorm(model: nn.Module) -> int:
    """Make every BatchNorm2d of `model` a GlobalBatchNorm2d in place (same parameters and
    buffers, so the state dict and the model file do not change). Returns how many."""
    changed = 0
    for module in model.modules():
        if type(module) is nn.BatchNorm2d:
            module.__class__ = GlobalBatchNorm2d
            changed += 1
    return changed


def scaled_loss(group: Group, logits: torch.Tensor, labels: torch.Tensor, global_count: int, label_smoothing: float) -> torch.Tensor:
    """The loss whose DDP-averaged gradient is the global batch's mean-loss gradient.

    DDP averages the ranks' gradients (divides their sum by `world`), so each rank contributes
    world / global_count times the sum of its samples' losses.
    """
    total = F.cross_entropy(logits, labels, label_smoothing=label_smoothing, reduction="sum")
    return total * (group.world / global_count)
