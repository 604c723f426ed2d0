"""Image folders larger than memory: decoded once into a file on disk, read a batch at a time.

A folder is streamed when `--stream` asks for it, or when its decoded training images (N x C x H
x W bytes) exceed the memory budget: `--memory-budget-mb`, by default `BUDGET_FRACTION` of the
RAM available when the run starts. Nothing then holds the split in memory; the process keeps
the file list, the labels and the few batches in flight, whatever the folder's size.

    decode cache    The first run decodes every file once with the in-memory path's decoder
                    (`image_folder.decode_files`: `images.load_image` in one worker process per
                    core), skipping unreadable files as it does, into one raw uint8 file of rows
                    (C, H, W) in the cache home, `cache/<key>.u8`, with its labels in
                    `cache/<key>.npz`, with the raw file's SHA-256, checked each time the entry is
                    opened: a damaged, altered or foreign raw file is decoded again (`cache.py`).
                    Before writing, a DataWarning says how large it will be and where. When the
                    disk lacks room (`FREE_MARGIN`), the cache home cannot be written or the lock
                    `cache/<key>.lock` is not a regular file (a link or a FIFO, never followed or
                    waited on), nothing is cached: the loader's workers decode the files every epoch.
    batches         `data.batches.StreamingBatches`: the epoch's permutation is drawn from the trainer's
                    generator exactly as `InMemoryBatches` draws it, and each batch is read by a
                    `torch.utils.data.DataLoader` worker process ahead of the training step, so a
                    seeded streamed run trains on the same batches as the in-memory run.
    distributed     Every rank gets the whole global batch in shape, but reads only its own slice
                    of it (`part`); the other rows stay zero. The trainer augments the whole batch
                    with the same draws on every rank (augmentation is per image: row i depends on
                    image i and the draws alone) and keeps its slice, so reading is shared out
                    and the augmentation equals one process's.
    normalization   `normalize="standard"` takes the mean and std of a seeded sample of
                    `STATS_SAMPLE` training images (`sample_stats`), not of every image; with
                    fewer images than that it is all of them, and equals the in-memory figures.
"""
from __future__ import annotations

import fcntl
import hashlib
import math
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from convnet.data import cache, image_folder
from convnet.data.dataset import Dataset, channel_stats
from convnet.data.image_folder import UNREADABLE, DataWarning, FolderSplit
from convnet.data.images import display_name, load_image
from convnet.errors import DataError
from convnet.files import atomic_write, open_regular, size_text

BUDGET_FRACTION = 0.5  # of the RAM available at the start: the rest is the model's, the batches' and other programs'
FREE_MARGIN = 1 << 30  # bytes the decode cache leaves free on its disk
STATS_SAMPLE = 5000  # training images the streamed mean and std are measured on


def available_memory() -> int:
    """Bytes of RAM available to new work now (Linux's MemAvailable; free pages elsewhere)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def memory_budget(budget_mb: int | None) -> int:
    """Bytes of decoded images a run may hold in memory: `budget_mb` MB, or by default
    `BUDGET_FRACTION` of the available RAM."""
    return budget_mb * 1_000_000 if budget_mb is not None else int(BUDGET_FRACTION * available_memory())




@dataclass(frozen=True)
class ImageStore:
    """Where a streamed folder's decoded images are read from: rows of the decode cache file, or
    (without one) the image files themselves, decoded on each read."""

    root: Path
    files: tuple[str, ...]  # the readable images, relative to root; row i is files[i]
    shape: tuple[int, int, int]  # (C, H, W) of a row
    path: Path | None  # the decode cache file; None: decode on each read

    def read(self, rows: np.ndarray) -> np.ndarray:
        """uint8 (len(rows), C, H, W): the images of `rows`."""
        out = np.zeros((len(rows), *self.shape), dtype=np.uint8)
        if self.path is not None:
            row_bytes = math.prod(self.shape)
            fd = open_regular(self.path)
            try:
                # pread, not a memory map: mapped pages would count as this process's memory.
                for i, r in enumerate(rows.tolist()):
                    os.preadv(fd, [out[i]], r * row_bytes)
            finally:
                os.close(fd)
            return out
        bad = []
        for i, r in enumerate(rows.tolist()):
            try:
                out[i] = load_image(self.root / self.files[r], self.shape[1:], self.shape[0]).numpy()
            except UNREADABLE:
                bad.append(self.files[r])  # found only now, as nothing was decoded ahead: trained as a black image
        if bad:
            warnings.warn(
                f"Could not decode {', '.join(display_name(b) for b in bad)} in {display_name(self.root)}; "
                "trained on as a black image.",
                DataWarning,
                stacklevel=2,
            )
        return out


@dataclass(frozen=True)
class StreamedSplit:
    """A split whose images stay on disk: what `Dataset` is for a split held in memory, with
    `read(indexes)` in place of `images[indexes]`."""

    store: ImageStore
    rows: torch.Tensor  # (N,) int64: row of the store of each image
    labels: torch.Tensor  # (N,) int64, indexes into classes
    classes: tuple[str, ...]
    source: str  # where it came from, for run metadata and messages

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return self.store.shape

    def subset(self, indices: torch.Tensor) -> StreamedSplit:
        return StreamedSplit(self.store, self.rows[indices], self.labels[indices], self.classes, self.source)

    def class_counts(self) -> torch.Tensor:
        return torch.bincount(self.labels, minlength=len(self.classes))

    def read(self, indices: torch.Tensor) -> torch.Tensor:
        """uint8 (len(indices), C, H, W): the split's images `indices`, in that order."""
        return torch.from_numpy(self.store.read(self.rows[indices].numpy()))


def open_streamed(found: FolderSplit) -> StreamedSplit:
    """The split to stream: its decode cache, made first when there is none (see the module docstring)."""
    key = cache.cache_key("image-folder-stream", found.root, found.files, split=found.split,
                          size=list(found.image_size), channels=found.channels)
    shape = (found.channels, *found.image_size)
    index = _cached_index(key, found, warn=True)
    if index is None:
        index = _make_cache(key, found)
    if index is None:  # no room: the workers decode every file of every epoch
        store, labels, skipped = ImageStore(found.root, tuple(found.files), shape, None), found.labels, []
    else:
        skipped_set = set(index["skipped"].tolist())
        kept = [f for f in found.files if f not in skipped_set]
        store, labels, skipped = (ImageStore(found.root, tuple(kept), shape, _raw_path(key)), index["labels"],
                                  index["skipped"].tolist())
    image_folder.warn_skipped(found.root, sorted(found.others + [str(s) for s in skipped]))
    labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    return StreamedSplit(store, torch.arange(len(labels)), labels, found.classes, image_folder.source_name(found))


def _raw_path(key: str) -> Path:
    return cache.cache_path(key).with_suffix(".u8")


def _row_bytes(found: FolderSplit) -> int:
    """Bytes of one decoded image: a row of the raw file."""
    return found.channels * found.image_size[0] * found.image_size[1]


def _cached_index(key: str, found: FolderSplit, warn: bool) -> dict[str, np.ndarray] | None:
    """The cache entry's labels and skipped files, when the entry is whole, matches `found` and its
    raw file matches its checksum; `warn`: say so (once) when an entry is there but damaged."""
    index = cache.load_arrays(key, found.root, warn=warn)
    if index is None or set(index) != {"labels", "skipped", "raw_sha256"}:
        return None
    labels, skipped = index["labels"], index["skipped"]
    whole = (
        labels.dtype == np.int64
        and skipped.dtype.kind == "U"
        and len(labels) + len(skipped) == len(found.files)
        and bool(((labels >= 0) & (labels < len(found.classes))).all())
    )
    if not whole:
        return None
    raw = _raw_path(key)
    try:
        matches = np.array_equal(cache.file_checksum(raw, len(labels) * _row_bytes(found)), index["raw_sha256"])
        why: str | OSError = "its pixels do not match their checksum"
    except OSError as e:
        matches, why = False, e
    if not matches and warn:
        cache.warn_damaged(raw, why)
    return index if matches else None


def _make_cache(key: str, found: FolderSplit) -> dict[str, np.ndarray] | None:
    """Decode the split into the cache file, saying first how large it is and where; None
    (with a warning saying why) when it cannot be written."""
    raw = _raw_path(key)
    size = size_text(found.decoded_bytes)
    try:
        raw.parent.mkdir(parents=True, exist_ok=True)
        with os.fdopen(open_regular(raw.with_suffix(".lock"), os.O_RDWR | os.O_CREAT), "rb") as lock:
            # Ranks of a torchrun launch share a cache home: one decodes, the others wait and read it.
            fcntl.flock(lock, fcntl.LOCK_EX)
            index = _cached_index(key, found, warn=False)  # said already, before the wait
            if index is not None:
                return index
            free = shutil.disk_usage(raw.parent).free
            if found.decoded_bytes + FREE_MARGIN > free:
                warnings.warn(
                    f"The decode cache of {len(found.files)} images would take {size} in {raw.parent}, "
                    f"which has {size_text(free)} free; "
                    "images are decoded again every epoch instead "
                    "(set CONVNET_HOME to a disk with room to cache them).",
                    DataWarning,
                    stacklevel=3,
                )
                return None
            warnings.warn(
                f"Caching {len(found.files)} decoded images for streaming: {size} in {raw} "
                f"({size_text(free)} free there).",
                DataWarning,
                stacklevel=3,
            )
            index = _decode_into(raw, found)
            cache.save_arrays(key, index, found.root)  # last: its presence says the raw file is whole
            for stale in cache.stale_keys(key, ".u8"):  # older files of the same folder and settings
                _raw_path(stale).unlink(missing_ok=True)
            return index
    except OSError as e:
        warnings.warn(
            f"Could not write the decode cache ({size}) in {raw.parent} ({e}); images are decoded again every epoch.",
            DataWarning,
            stacklevel=3,
        )
        return None


def _decode_into(raw: Path, found: FolderSplit) -> dict[str, np.ndarray]:
    """Decode every file into `raw`, one chunk in memory at a time; returns the index to store."""
    ok = np.ones(len(found.files), dtype=bool)
    # The raw file's SHA-256 taken as it is written: cache.file_checksum's digest, without reading it all back.
    digest = hashlib.sha256()

    def write(tmp: str) -> None:
        start = 0
        with open(tmp, "wb") as f:
            for arrays, bad in image_folder.decode_files(found):
                keep = np.ones(len(arrays), dtype=bool)
                keep[bad] = False
                chunk = np.ascontiguousarray(arrays[keep]).tobytes()
                f.write(chunk)
                digest.update(chunk)
                ok[start : start + len(arrays)] = keep
                start += len(arrays)
        if not ok.any():
            raise image_folder.none_readable(found.root)

    atomic_write(raw, write)
    skipped = [f for f, good in zip(found.files, ok, strict=True) if not good]
    labels = found.labels[ok]
    return {"labels": labels, "skipped": np.array(skipped, dtype=str),
            "raw_sha256": np.frombuffer(digest.digest(), dtype=np.uint8)}


def sample_stats(split: StreamedSplit, seed: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (0..1 scale) of a seeded sample of `STATS_SAMPLE` images."""
    pick = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:STATS_SAMPLE]
    return channel_stats(split.read(pick.sort().values))  # sorted: the cache file is read front to back


def in_memory(split: Dataset | StreamedSplit, budget_mb: int | None) -> Dataset:
    """A streamed split read whole into memory, for what needs all its images at once (evaluate).

    Raises:
        DataError: the split does not fit the memory budget; one sentence.
    """
    if isinstance(split, Dataset):
        return split
    c, h, w = split.image_shape
    size, budget = len(split) * c * h * w, memory_budget(budget_mb)
    if size > budget:
        raise DataError(
            f"These {len(split)} images take {size_text(size)} decoded, over the memory budget of {size_text(budget)}; "
            "evaluate a smaller split (--split val) or pass --data with a smaller folder."
        )
    return Dataset(split.read(torch.arange(len(split))), split.labels, split.classes, split.source)
