"""The in-memory dataset every source loads into, and the seeded ways to cut it.

A whole split lives in memory as one uint8 tensor: CIFAR-10's 50,000 training images are
150 MB, so batches are cut by indexing instead of decoding files in the training loop.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from convnet.errors import DataError


@dataclass(frozen=True)
class Dataset:
    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N,) int64, indexes into classes
    classes: tuple[str, ...]  # class names, label i is classes[i]
    source: str  # where it came from, for run metadata and messages

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise TypeError(
                f"images must be a uint8 (N, C, H, W) tensor, got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.shape != (len(self.images),):
            raise TypeError(f"labels must have shape ({len(self.images)},), got {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def subset(self, indices: torch.Tensor) -> Dataset:
        return Dataset(self.images[indices], self.labels[indices], self.classes, self.source)

    def class_counts(self) -> torch.Tensor:
        return torch.bincount(self.labels, minlength=len(self.classes))


def stratified_indices(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices so that each class keeps its share on both sides.

    Returns:
        (kept, taken): `taken` holds round(fraction * count) images of each class, chosen by a
        generator seeded with `seed`; both are sorted so the original order survives.
    """
    if not 0.0 < fraction < 1.0:
        raise DataError(f"The split fraction must be between 0 and 1, got {fraction}.")
    gen = torch.Generator().manual_seed(seed)
    taken = []
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels == c).flatten()
        n = int(round(fraction * len(members)))
        taken.append(members[torch.randperm(len(members), generator=gen)[:n]])
    taken_idx = torch.sort(torch.cat(taken)).values
    mask = torch.ones(len(labels), dtype=torch.bool)
    mask[taken_idx] = False
    return torch.nonzero(mask).flatten(), taken_idx


def split_dataset(ds: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Carve a seeded, stratified validation split: returns (train, val)."""
    kept, taken = stratified_indices(ds.labels, fraction, seed)
    if len(taken) == 0 or len(kept) == 0:
        raise DataError(
            f"A validation split of {fraction} leaves one side empty on {len(ds)} images; "
            "use a larger dataset or another --val-split."
        )
    return ds.subset(kept), ds.subset(taken)


def limit_dataset(ds: Dataset, n: int, seed: int) -> Dataset:
    """A seeded, stratified subset of n images (all of them when n >= len(ds))."""
    if n >= len(ds):
        return ds
    if n < len(ds.classes):
        raise DataError(
            f"--limit {n} is smaller than the {len(ds.classes)} classes; ask for at least one image per class."
        )
    _, taken = stratified_indices(ds.labels, n / len(ds), seed)
    return ds.subset(taken)


def remap_labels(ds: Dataset, model_classes: tuple[str, ...]) -> Dataset:
    """Relabel `ds` so its labels index `model_classes`, matching by class name, never by position."""
    if tuple(ds.classes) == tuple(model_classes):
        return ds
    index = {name: i for i, name in enumerate(model_classes)}
    unknown = [c for c in ds.classes if c not in index]
    if unknown:
        raise DataError(
            f"The data has classes the model does not know ({', '.join(unknown)}); "
            f"the model knows {', '.join(model_classes)}."
        )
    table = torch.tensor([index[c] for c in ds.classes], dtype=torch.int64)
    return Dataset(ds.images, table[ds.labels], tuple(model_classes), ds.source)


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (unbiased) standard deviation of uint8 images (N, C, H, W), on the 0..1 scale.

    Computed exactly from each channel's 256-bin histogram: no float copy of the data set
    (600 MB for CIFAR-10).
    """
    levels = torch.arange(256, dtype=torch.float64) / 255
    means, stds = [], []
    for c in range(images.shape[1]):
        counts = torch.bincount(images[:, c].flatten(), minlength=256).double()
        n = counts.sum()
        mean = (counts * levels).sum() / n
        var = (counts * (levels - mean) ** 2).sum() / (n - 1).clamp_min(1)
        means.append(mean.item())
        stds.append(var.sqrt().item())
    return tuple(means), tuple(stds)
