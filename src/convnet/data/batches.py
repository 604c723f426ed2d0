"""Batch sources: what the training loop asks for each step's uint8 images and labels.

The loop never indexes a dataset itself. It asks a source for an epoch's batches, for a sample
to initialise a model from the data (airnet's patch whitening) and for a preview to draw, so
that a source held in memory (`InMemoryBatches`, today's) and one that streams from disk or
serves one shard of a distributed run plug into the same loop.

    source.batches(epoch, generator)  -> (dataset indexes, uint8 (B, C, H, W), labels (B,)) per step
    source.sample(n, seed)            -> uint8 (n, C, H, W): a seeded draw without replacement
    source.preview(n, seed)           -> (uint8 (n, C, H, W), class names): a seeded, mixed set
"""
from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from convnet.data.dataset import Dataset


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

    def batches(self, epoch: int, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
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


def preview(dataset: Dataset, n: int, seed: int | None) -> tuple[torch.Tensor, list[str]]:
    """Up to n images with their class names: a seeded shuffle's first (a mixed set, as the
    tutorial's grid is: image folders are sorted by class), or with seed None the first files.

    Returns:
        (uint8 (n, C, H, W), class names).
    """
    n = min(n, len(dataset))
    pick = torch.arange(n) if seed is None else shuffled_indices(len(dataset), seed)[:n]
    return dataset.images[pick], [dataset.classes[i] for i in dataset.labels[pick].tolist()]
