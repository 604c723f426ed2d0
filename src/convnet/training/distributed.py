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
  unwrapped model, so `--resume` works with any number of processes;
- every process reads --data itself (on its own machine): before training, `check_same` compares
  what each one read (classes, shape, counts, a hash of labels and pixels) and a difference stops
  the launch in one sentence from rank 0, as does any reason every rank finds alike (SaidOnRank0).
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from convnet.errors import ConfigError
from convnet.training.config import TrainConfig

T = TypeVar("T")
MAX_TEXT_BYTES = 4096  # longest text `broadcast_text` and `check_same` carry (a run folder's path, a few facts)


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
        raise ConfigError(f"The environment variable {name}={value!r} is not a whole number; "
                          "launch with torchrun, which sets it.") from None


class SaidOnRank0(ConfigError):
    """A reason every rank of the launch stops for, raised on the ranks other than 0: rank 0
    raises its own error, with the same words or more, so the CLI says it once."""


def join(config: TrainConfig, resuming: bool = False) -> Group:
    """The process group torchrun launched this process into, joined; one process: Group().

    Args:
        resuming: the config is a run folder's (`--resume`, which takes no other flag): advice
            names what can still change, the number of processes.
    Raises:
        ConfigError: a launch that cannot train as asked (a batch size the processes cannot
            share, NCCL without CUDA, the scratch engine), before any work; on ranks other
            than 0, as SaidOnRank0.
    """
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return SINGLE
    rank, local_rank = _env_int("RANK"), _env_int("LOCAL_RANK", 0)
    refused = ConfigError if rank == 0 else SaidOnRank0  # every rank finds the same reason, from the same config
    if config.engine != "torch":
        raise refused("Only the torch engine trains on several processes; drop --engine scratch or launch one process.")
    if config.batch_size % world and resuming:
        raise refused(f"The run's global batch of {config.batch_size} images cannot be shared by {world} processes; "
                      f"resume it on a number of processes that divides {config.batch_size}, such as "
                      f"{_near_divisors(config.batch_size, world)}.")
    if config.batch_size % world:
        raise refused(f"--batch-size {config.batch_size} cannot be shared by {world} processes; "
                      f"pick a multiple of {world} (it is the global batch).")
    backend = config.dist_backend
    if backend == "auto":
        backend = "nccl" if config.device in ("auto", "cuda") and torch.cuda.is_available() else "gloo"
    if backend == "nccl" and not torch.cuda.is_available():
        fix = ('resume it where GPUs are, or set "dist_backend": "auto" in its config.json' if resuming
               else "use --dist-backend gloo (or auto) on CPUs")
        raise refused(f"--dist-backend nccl needs CUDA GPUs and none is visible; {fix}.")
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return Group(rank, world, local_rank)


def _near_divisors(n: int, world: int) -> str:
    """The numbers of processes nearest `world` that share a batch of n: "2 or 4" for 32 and 3."""
    below = max(d for d in range(1, world) if n % d == 0)
    above = next((d for d in range(world + 1, n + 1) if n % d == 0), None)
    return f"{below} or {above}" if above is not None else str(below)


def check_same(group: Group, facts: dict[str, str], fix: str) -> None:
    """Stop every rank when any rank's `facts` differ from rank 0's, before they train apart.

    Args:
        facts: what every rank must have alike, a few words each ({"training images": "1800"}).
        fix: what to do, the end of the sentence.
    Raises:
        ConfigError on rank 0, naming the first rank and fact that differ; SaidOnRank0 on the others.
    """
    if not group.active:
        return
    texts = _all_gather_text(group, json.dumps(facts))
    ours = json.loads(texts[0])
    for rank, text in enumerate(texts):
        theirs = json.loads(text)
        key = next((k for k in ours if theirs.get(k) != ours[k]), None)
        if key is not None:
            refused = ConfigError if group.main else SaidOnRank0
            raise refused(f"The processes see different data ({key}: {theirs[key]} on rank {rank}, "
                          f"{ours[key]} on rank 0); {fix}.")


def _all_gather_text(group: Group, text: str) -> list[str]:
    """Every rank's `text`, in rank order (bytes in tensors: nothing is pickled)."""
    data = text.encode()
    if len(data) > MAX_TEXT_BYTES:
        # a bug: callers keep their texts short
        raise ValueError(f"{len(data)} bytes of text to gather; at most {MAX_TEXT_BYTES}")
    device = _comm_device()
    sizes = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(group.world)]
    dist.all_gather(sizes, torch.tensor([len(data)], dtype=torch.int64, device=device))
    buf = torch.zeros(MAX_TEXT_BYTES, dtype=torch.uint8)
    buf[: len(data)] = torch.tensor(list(data), dtype=torch.uint8)
    bufs = [torch.zeros(MAX_TEXT_BYTES, dtype=torch.uint8, device=device) for _ in range(group.world)]
    dist.all_gather(bufs, buf.to(device))
    return [bytes(b[: int(n.item())].cpu().tolist()).decode() for b, n in zip(bufs, sizes, strict=True)]


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


def scaled_loss(group: Group, logits: torch.Tensor, labels: torch.Tensor, global_count: int,
                label_smoothing: float) -> torch.Tensor:
    """The loss whose DDP-averaged gradient is the global batch's mean-loss gradient.

    DDP averages the ranks' gradients (divides their sum by `world`), so each rank contributes
    world / global_count times the sum of its samples' losses.
    """
    total = F.cross_entropy(logits, labels, label_smoothing=label_smoothing, reduction="sum")
    return total * (group.world / global_count)
