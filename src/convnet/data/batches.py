"""Batch sources: what the training loop asks for each step's uint8 images and labels.

The loop never indexes a dataset itself. It asks a source for an epoch's batches, for a sample
to initialise a model from the data (airnet's patch whitening) and for a preview to draw, so
that a source held in memory (`InMemoryBatches`, today's) and one that streams from disk or
serves one shard of a distributed run (`StreamingBatches`, data.streaming) plug into the same loop;
`batch_source` picks the one that fits the split.

    source.batches(epoch, generator)  -> (dataset indexes, uint8 (B, C, H, W), labels (B,)) per step
    source.sample(n, seed)            -> uint8 (n, C, H, W): a seeded draw without replacement
    source.preview(n, seed)           -> (uint8 (n, C, H, W), class names): a seeded, mixed set
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader

from convnet.data.dataset import Dataset
from convnet.data.streaming import StreamedSplit

_PREFETCH = 2  # batches each loader worker reads ahead of training


def batch_source(
    split: Dataset | StreamedSplit,
    batch_size: int,
    device: torch.device | str = "cpu",
    workers: int = 2,
    part: Callable[[int], slice] | None = None,
) -> InMemoryBatches | StreamingBatches:
    """The source for a training split: cut from memory, or read from disk when it streams.

    Args:
        workers, part: as `StreamingBatches` (a split in memory needs neither).
    """
    if isinstance(split, StreamedSplit):
        return StreamingBatches(split, batch_size, device, workers, part)
    return InMemoryBatches(split, batch_size, device)


def shuffled_indices(n: int, seed: int) -> torch.Tensor:
    """A seeded permutation of range(n): the order previews and init samples take."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


class InMemoryBatches:
    """Batches cut by index from a whole split held as one uint8 tensor on the training device."""

    def __init__(self, dataset: Dataset, batch_size: int, device: torch.device | str = "cpu"):
        self.dataset = dataset
        self.batch_size = batch_size
        self.images = dataset.images.to(device)  # (N, C, H, W) uint8
        self.labels = dataset.labels.to(device)  # (N,) int64

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self) / self.batch_size)

    def batches(self, epoch: int,
                generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """An epoch's batches in an order drawn from `generator` (its first draw of the epoch).

        Yields:
            (dataset indexes (B,), uint8 images (B, C, H, W), labels (B,)), on the device.
        """
        order = torch.randperm(len(self), generator=generator).to(self.labels.device)
        for i in range(0, len(order), self.batch_size):
            idx = order[i : i + self.batch_size]
            yield idx, self.images[idx], self.labels[idx]

    def sample(self, n: int, seed: int) -> torch.Tensor:
        """Up to n images drawn without replacement by `seed`, on the CPU (image folders are
        sorted by class, so the first ones would all be one class)."""
        return self.dataset.images[shuffled_indices(len(self), seed)[:n]]

    def preview(self, n: int, seed: int) -> tuple[torch.Tensor, list[str]]:
        return preview(self.dataset, n, seed)


class _BatchReader(torch.utils.data.Dataset):
    """What a loader worker runs: one job (dataset indexes, part) -> that global batch, only `part` read."""

    def __init__(self, split: StreamedSplit):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, job: tuple[torch.Tensor, slice]) -> torch.Tensor:
        idx, part = job
        images = torch.zeros((len(idx), *self.split.image_shape), dtype=torch.uint8)  # (B, C, H, W)
        images[part] = self.split.read(idx[part])
        return images


class StreamingBatches:
    """Batches of a split streamed from disk (data.streaming), read by loader worker processes ahead of training."""

    def __init__(
        self,
        split: StreamedSplit,
        batch_size: int,
        device: torch.device | str = "cpu",
        workers: int = 2,
        part: Callable[[int], slice] | None = None,
    ):
        """
        Args:
            workers: loader processes reading ahead of training; 0 reads in the training process.
            part: this rank's slice of a global batch of n images (training.distributed.shard);
                None reads all of it.
        """
        self.split, self.batch_size, self.device, self.workers, self.part = split, batch_size, device, workers, part

    def __len__(self) -> int:
        return len(self.split)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self) / self.batch_size)

    def _slice(self, n: int) -> slice:
        if self.part is None:
            return slice(0, n)
        part = self.part(n)
        # A rank without images in a short last batch trains on its first one with weight 0 (torch_trainer).
        return part if part.start < part.stop else slice(0, 1)

    def batches(self, epoch: int,
                generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """An epoch's batches in the order `InMemoryBatches` gives them for the same generator.

        Yields:
            (dataset indexes (B,), uint8 images (B, C, H, W), labels (B,)), on the device; rows
            outside this rank's part are zeros.
        """
        order = torch.randperm(len(self), generator=generator)
        jobs = [(idx, self._slice(len(idx))) for idx in order.split(self.batch_size)]
        fork = self.workers > 0 and "fork" in torch.multiprocessing.get_all_start_methods()
        loader = DataLoader(
            _BatchReader(self.split),
            batch_size=None,  # each job is a whole batch
            sampler=jobs,
            num_workers=self.workers,
            prefetch_factor=_PREFETCH if self.workers else None,
            multiprocessing_context="fork" if fork else None,  # workers start at once, torch already imported
            generator=torch.Generator(),  # its own: the loader's seed draw leaves the global RNG (dropout's) alone
        )
        for (idx, _), images in zip(jobs, loader, strict=True):
            yield idx.to(self.device), images.to(self.device), self.split.labels[idx].to(self.device)

    def sample(self, n: int, seed: int) -> torch.Tensor:
        """Up to n images drawn without replacement by `seed`, on the CPU (as `InMemoryBatches.sample`)."""
        return self.split.read(shuffled_indices(len(self), seed)[:n])

    def preview(self, n: int, seed: int) -> tuple[torch.Tensor, list[str]]:
        return preview(self.split, n, seed)


def preview(dataset: Dataset | StreamedSplit, n: int, seed: int | None) -> tuple[torch.Tensor, list[str]]:
    """Up to n images with their class names: a seeded shuffle's first (a mixed set, as the
    tutorial's grid is: image folders are sorted by class), or with seed None the first files.

    Returns:
        (uint8 (n, C, H, W), class names).
    """
    n = min(n, len(dataset))
    pick = torch.arange(n) if seed is None else shuffled_indices(len(dataset), seed)[:n]
    images = dataset.read(pick) if isinstance(dataset, StreamedSplit) else dataset.images[pick]
    return images, [dataset.classes[i] for i in dataset.labels[pick].tolist()]
