"""Image folders: one subfolder of images per class, optionally under train/, val/ and test/.

    ROOT/<class>/<image>                  one split, called "all"
    ROOT/{train,val,test}/<class>/<image> the splits that are there

Images may be JPEG, PNG, BMP, GIF, WebP or TIFF of any size and mode; each goes through
`images.load_image`, the conversion prediction uses too. Files Pillow cannot read are skipped
and named in one `DataWarning`. Decoded splits are cached (see `cache.py`), so only the first
load of a folder pays for decoding: on 2 cores, CIFAR-10's 50,000 32x32 JPEGs take a few
seconds with two worker processes (see `tests/data/test_image_folder.py` for how it is checked).
"""
from __future__ import annotations

import multiprocessing
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm import tqdm

from convnet.data import cache
from convnet.data.dataset import Dataset
from convnet.data.images import is_image_file, load_image, natural_channels
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
    root = Path(root).resolve()
    tree = _scan(root)
    split = WHOLE if WHOLE in tree else split
    classes = tuple(sorted({c for by_class in tree.values() for c in by_class}))
    if not classes:
        raise DataError(f"No images found in {root}; an image folder holds {LAYOUT}.")
    if len(classes) == 1:
        raise DataError(f"{root} has images of one class only ({classes[0]}); a classifier needs at least two class subfolders.")
    files, labels = _files_and_labels(tree[split], classes)
    if image_size is None or channels is None:
        first_size, first_channels = _natural_format(root, tree, classes)
        image_size, channels = image_size or first_size, channels or first_channels
    key = cache.cache_key("image-folder", root, files, split=split, size=list(image_size), channels=channels)
    stored = cache.load_arrays(key)
    if stored is None:
        stored = _decode_split(root, files, labels, classes, image_size, channels)
        _store(key, stored)
    _warn_skipped(root, [str(s) for s in stored["skipped"]])
    return Dataset(
        images=torch.from_numpy(stored["images"]),
        labels=torch.from_numpy(stored["labels"]),
        classes=tuple(str(c) for c in stored["classes"]),
        source=f"{DESCRIPTION} {root} ({split})",
    )


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _scan(root: Path) -> dict[str, dict[str, list[Path]]]:
    """split -> class -> sorted image files, for every split; classes without images are left out."""
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; pass a folder that holds {LAYOUT}.")
    tree = {}
    for split in folder_splits(root):
        base = root if split == WHOLE else root / split
        by_class = {d.name: sorted(p for p in d.rglob("*") if p.is_file() and is_image_file(p)) for d in _subdirs(base)}
        tree[split] = {name: files for name, files in by_class.items() if files}
    return tree


def _files_and_labels(by_class: dict[str, list[Path]], classes: tuple[str, ...]) -> tuple[list[Path], np.ndarray]:
    files, labels = [], []
    for label, name in enumerate(classes):
        found = by_class.get(name, [])
        files += found
        labels += [label] * len(found)
    return files, np.array(labels, dtype=np.int64)


def _natural_format(root: Path, tree: dict[str, dict[str, list[Path]]], classes: tuple[str, ...]) -> tuple[tuple[int, int], int]:
    """(H, W) and channel count of the folder's first readable image, as displayed (EXIF applied).

    Taken from the whole folder, not the split asked for, so that every split decodes to one shape.
    """
    for by_class in tree.values():
        for path in _files_and_labels(by_class, classes)[0]:
            try:
                with Image.open(path) as img:
                    upright = ImageOps.exif_transpose(img)
                    return (upright.height, upright.width), natural_channels(img)
            except UNREADABLE:
                continue
    raise DataError(f"None of the image files in {root} could be read; check that they are images Pillow can open.")


def _decode_split(
    root: Path,
    files: list[Path],
    labels: np.ndarray,
    classes: tuple[str, ...],
    size: tuple[int, int],
    channels: int,
) -> dict[str, np.ndarray]:
    """Decode every file; returns the arrays the cache stores (images, labels, classes, skipped)."""
    images = np.empty((len(files), channels, *size), dtype=np.uint8)  # (N, C, H, W)
    ok = np.ones(len(files), dtype=bool)
    chunks = [files[i : i + _CHUNK] for i in range(0, len(files), _CHUNK)]
    show = len(files) >= _PROGRESS_MIN and sys.stderr.isatty()
    with _parallel_map(len(files)) as pmap, tqdm(total=len(files), desc="decoding images", unit="img", disable=not show) as bar:
        start = 0
        for arrays, bad in pmap(_decode_chunk, [(chunk, size, channels) for chunk in chunks]):
            images[start : start + len(arrays)] = arrays
            ok[[start + i for i in bad]] = False
            start += len(arrays)
            bar.update(len(arrays))
    skipped = [f.relative_to(root).as_posix() for f, good in zip(files, ok) if not good]
    if not ok.any():
        raise DataError(f"None of the {len(files)} image files in {root} could be read; check that they are images Pillow can open.")
    return {"images": images[ok], "labels": labels[ok], "classes": np.array(classes), "skipped": np.array(skipped, dtype=str)}


def _decode_chunk(job: tuple[list[Path], tuple[int, int], int]) -> tuple[np.ndarray, list[int]]:
    """Decode a list of files in a worker; returns (images (n, C, H, W), indexes of unreadable files)."""
    paths, size, channels = job
    out = np.zeros((len(paths), channels, *size), dtype=np.uint8)
    bad = []
    for i, path in enumerate(paths):
        try:
            out[i] = load_image(path, size, channels).numpy()
        except UNREADABLE:
            bad.append(i)
    return out, bad


@contextmanager
def _parallel_map(n_files: int) -> Iterator[Callable]:
    """An ordered map over worker processes when there are enough files and cores, else `map`.

    Measured on 2 cores, 50,000 32x32 JPEGs: two forked workers decode them about 1.7x faster than
    one process; threads gain nothing, as the per-image work is mostly Python holding the GIL.
    Only "fork" is used: workers start in milliseconds with torch already imported, whereas spawn
    or forkserver would import torch again in each and re-run a caller's unguarded __main__.
    """
    workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if n_files < _PARALLEL_MIN or workers < 2 or "fork" not in multiprocessing.get_all_start_methods():
        yield map
        return
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        yield pool.imap


def _store(key: str, arrays: dict[str, np.ndarray]) -> None:
    try:
        cache.save_arrays(key, arrays)
    except OSError as e:
        # The data is already decoded; a cache that cannot be written only costs time next run.
        warnings.warn(f"Could not cache the decoded images in {cache.cache_path(key).parent} ({e}); set CONVNET_HOME to a writable folder.", DataWarning, stacklevel=3)


def _warn_skipped(root: Path, skipped: list[str]) -> None:
    if not skipped:
        return
    named = ", ".join(skipped[:_MAX_NAMED])
    more = f" and {len(skipped) - _MAX_NAMED} more" if len(skipped) > _MAX_NAMED else ""
    warnings.warn(f"Skipped {len(skipped)} unreadable image file(s) in {root}: {named}{more}.", DataWarning, stacklevel=3)
