"""Image folders: one subfolder of images per class, optionally under train/, val/ and test/.

    ROOT/<class>/<image>                  one split, called "all"
    ROOT/{train,val,test}/<class>/<image> the splits that are there

Images may be JPEG, PNG, BMP, GIF, WebP or TIFF of any size and mode; each goes through
`images.load_image`, the conversion prediction uses too. Files Pillow cannot read, and entries
named like images that are not regular files (FIFOs, sockets, broken or looping links), are
skipped and named in one `DataWarning`; the latter are never opened, so a FIFO cannot hang a load.
Decoded splits are cached (see `cache.py`), so only the first load of a folder pays for decoding;
large folders are decoded by one worker process per core.
"""
from __future__ import annotations

import multiprocessing
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm import tqdm

from convnet.data import cache
from convnet.data.dataset import Dataset
from convnet.data.images import display_name, find_image_files, load_image, natural_channels, open_image
from convnet.errors import DataError

DESCRIPTION = "image folder"
SPLITS = ("train", "val", "test")
WHOLE = "all"  # the one split of a folder without train/val/test subfolders
LAYOUT = "one subfolder of images per class (ROOT/<class>/*.jpg), optionally under train/, val/ and test/"

# What Pillow raises for damaged or unsupported files.
UNREADABLE = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)
_CHUNK = 256  # images per task sent to a worker process
_PARALLEL_MIN = 2000  # below this many files, starting workers costs more than it saves
_PROGRESS_MIN = 500  # below this many files, decoding is too quick to need a progress bar
_MAX_NAMED = 10  # skipped files named in the warning; the rest are counted


class DataWarning(UserWarning):
    """Data that could be used only in part, e.g. image files that were skipped."""


def folder_splits(root: Path) -> tuple[str, ...]:
    """("train", "val", "test") where those subfolders are the only ones, else ("all",)."""
    names = {d.name for d in _subdirs(root)}
    if names and names <= set(SPLITS):
        return tuple(s for s in SPLITS if s in names)
    return (WHOLE,)


@dataclass(frozen=True)
class FolderSplit:
    """One split of an image folder as scanned, before anything is decoded."""

    root: Path  # resolved
    split: str  # the split scanned: "all" for a folder without train/val/test
    files: list[str]  # image files relative to root, sorted by class and then by name
    labels: np.ndarray  # (len(files),) int64, indexes into classes
    classes: tuple[str, ...]  # the whole folder's classes: every split agrees
    others: list[str]  # image-named entries that are not regular files (never opened)
    image_size: tuple[int, int]  # (H, W) every image is decoded to
    channels: int  # 1 or 3

    @property
    def decoded_bytes(self) -> int:
        """What the split takes decoded, as one uint8 (N, C, H, W) tensor."""
        return len(self.files) * self.channels * self.image_size[0] * self.image_size[1]


def scan_folder(
    root: str | Path,
    split: str = WHOLE,
    image_size: tuple[int, int] | None = None,
    channels: int | None = None,
) -> FolderSplit:
    """List one split of an image folder and settle the size and channels it decodes to.

    Args: as `load_image_folder`.
    Raises:
        DataError: no images, one class only, or no readable image to take the format from.
    """
    root = Path(root).resolve()
    tree, others = _scan(root)
    split = WHOLE if WHOLE in tree else split
    if split not in tree:
        raise DataError(f"{DESCRIPTION} {root} has no {split!r} split; ask for one of: {', '.join(tree)}.")
    classes = tuple(sorted({c for by_class in tree.values() for c in by_class}))
    if not classes:
        raise DataError(f"No images found in {root}; an image folder holds {LAYOUT}.")
    if len(classes) == 1:
        raise DataError(
            f"{root} has images of one class only ({classes[0]}); a classifier needs at least two class subfolders."
        )
    files, labels = _files_and_labels(tree[split], classes)  # files: paths relative to root
    if not files:
        raise DataError(f"No images found in {root / split}; put one subfolder of images per class there.")
    if image_size is None or channels is None:
        first_size, first_channels = _natural_format(root, tree, classes)
        image_size, channels = image_size or first_size, channels or first_channels
    return FolderSplit(root, split, files, labels, classes, others.get(split, []), tuple(image_size), channels)


def load_image_folder(
    root: str | Path,
    split: str = WHOLE,
    image_size: tuple[int, int] | None = None,
    channels: int | None = None,
) -> Dataset:
    """Decode one split of an image folder, or read it from the cache when nothing changed.

    Args:
        root: the folder.
        split: one of `folder_splits(root)`; a folder with one split ("all") returns the whole
            folder whatever split is asked, as that folder is the data being trained or evaluated.
        image_size: (H, W) of the output; None takes the size of the folder's first image.
        channels: 1 or 3; None takes the first image's natural count (`images.natural_channels`).
    Returns:
        The split, with labels indexing the classes of the whole folder (every split agrees).
    """
    return load_scanned(scan_folder(root, split, image_size, channels))


def load_scanned(found: FolderSplit) -> Dataset:
    """`load_image_folder` after the scan: decode the split into memory, or read its cache entry."""
    root, files = found.root, found.files
    key = cache.cache_key("image-folder", root, files, split=found.split, size=list(found.image_size),
                          channels=found.channels)
    stored = cache.load_arrays(key, root)
    if not _is_entry_for(stored, len(files), found.classes, (found.channels, *found.image_size)):
        stored = _decode_split(found)
        _store(key, stored, root)
    warn_skipped(root, sorted(found.others + [str(s) for s in stored["skipped"]]))
    return Dataset(
        images=torch.from_numpy(stored["images"]),
        labels=torch.from_numpy(stored["labels"]),
        classes=tuple(str(c) for c in stored["classes"]),
        source=source_name(found),
    )


def source_name(found: FolderSplit) -> str:
    """How run metadata and messages name the split: "image folder /abs/path (train)"."""
    return f"{DESCRIPTION} {found.root} ({found.split})"


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _scan(root: Path) -> tuple[dict[str, dict[str, list[str]]], dict[str, list[str]]]:
    """(split -> class -> sorted image paths, split -> entries that are not regular files), for
    every split, paths relative to `root`.

    Classes without images are left out. Relative strings rather than `Path`s: at 50,000 files,
    making and comparing `Path` objects costs more than listing the files.
    """
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; pass a folder that holds {LAYOUT}.")
    tree, others = {}, {}
    for split in folder_splits(root):
        base = root if split == WHOLE else root / split
        tree[split], others[split] = {}, []
        for d in _subdirs(base):
            files, odd = find_image_files(root, d.relative_to(root).as_posix())
            others[split] += odd
            if files:
                tree[split][d.name] = files
    return tree, others


def _files_and_labels(by_class: dict[str, list[str]], classes: tuple[str, ...]) -> tuple[list[str], np.ndarray]:
    files, labels = [], []
    for label, name in enumerate(classes):
        found = by_class.get(name, [])
        files += found
        labels += [label] * len(found)
    return files, np.array(labels, dtype=np.int64)


def _natural_format(root: Path, tree: dict[str, dict[str, list[str]]],
                    classes: tuple[str, ...]) -> tuple[tuple[int, int], int]:
    """(H, W) and channel count of the folder's first readable image, as displayed (EXIF applied).

    Taken from the whole folder, not the split asked for, so that every split decodes to one shape.
    """
    for by_class in tree.values():
        for name in _files_and_labels(by_class, classes)[0]:
            try:
                with open_image(root / name) as img:
                    upright = ImageOps.exif_transpose(img)
                    return (upright.height, upright.width), natural_channels(img)
            except UNREADABLE:
                continue
    raise none_readable(root)


def _decode_split(found: FolderSplit) -> dict[str, np.ndarray]:
    """Decode every file; returns the arrays the cache stores (images, labels, classes, skipped)."""
    images = np.empty((len(found.files), found.channels, *found.image_size), dtype=np.uint8)  # (N, C, H, W)
    ok = np.ones(len(found.files), dtype=bool)
    start = 0
    for arrays, bad in decode_files(found):
        images[start : start + len(arrays)] = arrays
        ok[[start + i for i in bad]] = False
        start += len(arrays)
    skipped = [f for f, good in zip(found.files, ok, strict=True) if not good]
    if not ok.any():
        raise none_readable(found.root)
    return {"images": images[ok], "labels": found.labels[ok], "classes": np.array(found.classes),
            "skipped": np.array(skipped, dtype=str)}


def decode_files(found: FolderSplit) -> Iterator[tuple[np.ndarray, list[int]]]:
    """Decode the split's files in order, in worker processes when there are many, with a progress bar.

    Yields:
        (uint8 images (n, C, H, W) of the next n files, indexes among those n of unreadable files,
        whose rows are zeros), chunk after chunk: the caller holds one chunk at a time.
    """
    files = found.files
    chunks = [files[i : i + _CHUNK] for i in range(0, len(files), _CHUNK)]
    quiet = True if len(files) < _PROGRESS_MIN else None  # None: tqdm shows the bar on a terminal only
    jobs = [(str(found.root), chunk, found.image_size, found.channels) for chunk in chunks]
    with (_parallel_map(len(files)) as pmap,
          tqdm(total=len(files), desc="decoding images", unit="img", disable=quiet) as bar):
        for arrays, bad in pmap(_decode_chunk, jobs):
            bar.update(len(arrays))
            yield arrays, bad


def _decode_chunk(job: tuple[str, list[str], tuple[int, int], int]) -> tuple[np.ndarray, list[int]]:
    """Decode files (relative to a root) in a worker; returns (images (n, C, H, W), indexes of unreadable ones)."""
    root, names, size, channels = job
    out = np.zeros((len(names), channels, *size), dtype=np.uint8)
    bad = []
    for i, name in enumerate(names):
        try:
            out[i] = load_image(os.path.join(root, name), size, channels).numpy()
        except UNREADABLE:
            bad.append(i)
    return out, bad


@contextmanager
def _parallel_map(n_files: int) -> Iterator[Callable]:
    """An ordered map over worker processes when there are enough files and cores, else `map`.

    Processes, not threads: the per-image work is mostly Python that holds the GIL, so threads
    would take turns; forked workers decode side by side on cores that are free (on cores that
    other processes keep busy they gain nothing).
    Only "fork" is used: workers start in milliseconds with torch already imported, whereas spawn
    or forkserver would import torch again in each and re-run a caller's unguarded __main__.
    """
    workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if n_files < _PARALLEL_MIN or workers < 2 or "fork" not in multiprocessing.get_all_start_methods():
        yield map
        return
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        yield pool.imap


def none_readable(root: Path) -> DataError:
    return DataError(f"None of the image files in {root} could be read; check that they are images Pillow can open.")


def _store(key: str, arrays: dict[str, np.ndarray], root: Path) -> None:
    try:
        cache.save_arrays(key, arrays, root)
    except OSError as e:
        # The data is already decoded; a cache that cannot be written only costs time next run.
        where = cache.cache_path(key).parent
        warnings.warn(
            f"Could not cache the decoded images in {where} ({e}); set CONVNET_HOME to a writable folder.",
            DataWarning,
            stacklevel=3,
        )


def _is_entry_for(stored: Mapping[str, np.ndarray] | None, n_files: int, classes: tuple[str, ...],
                  shape: tuple[int, ...]) -> bool:
    """Whether a cache entry holds what decoding these files would give: anything else (an entry
    damaged or planted in the cache home) is decoded again rather than trusted."""
    if stored is None or set(stored) != {"images", "labels", "classes", "skipped"}:
        return False
    images, labels, names, skipped = stored["images"], stored["labels"], stored["classes"], stored["skipped"]
    return (
        images.dtype == np.uint8
        and images.shape[1:] == shape
        and labels.dtype == np.int64
        and labels.shape == (len(images),)
        and len(images) + len(skipped) == n_files
        and tuple(str(c) for c in names.ravel()) == classes
        and skipped.dtype.kind == "U"
        and bool(((labels >= 0) & (labels < len(classes))).all())
    )


def warn_skipped(root: Path, skipped: list[str]) -> None:
    """One DataWarning naming the first of the skipped files and counting the rest."""
    if not skipped:
        return
    named = ", ".join(display_name(s) for s in skipped[:_MAX_NAMED])
    more = f" and {len(skipped) - _MAX_NAMED} more" if len(skipped) > _MAX_NAMED else ""
    warnings.warn(
        f"Skipped {len(skipped)} unreadable image file(s) in {display_name(root)}: {named}{more}.",
        DataWarning,
        stacklevel=3,
    )
