"""Fashion-MNIST (Xiao et al., 2017) from its four IDX files, raw or gzipped.

IDX format: a big-endian header of two zero bytes, a type byte (0x08 = unsigned byte, the only
one these files use) and the number of dimensions, then one uint32 per dimension, then the
values in row-major order. Images are (N, 28, 28), magic 0x00000803; labels (N,), 0x00000801.
Debian's `dataset-fashion-mnist` package installs the gzipped files in `DEFAULT_DIR`.
"""
from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np
import torch

from convnet.data.dataset import Dataset
from convnet.errors import DataError

DESCRIPTION = "Fashion-MNIST (IDX files)"
DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FILES = {  # split -> (images, labels)
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_UBYTE = 0x08
_MAX_VALUES = 1 << 31  # 2 GiB: Fashion-MNIST's largest file holds 47 MB


def idx_file(folder: Path, name: str) -> Path | None:
    """`folder/name` or `folder/name.gz`, whichever exists."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def idx_splits(folder: Path) -> tuple[str, ...]:
    """The splits whose image and label files are both in `folder`."""
    return tuple(split for split, names in FILES.items() if all(idx_file(folder, n) for n in names))


def read_idx(path: Path) -> np.ndarray:
    """Read an unsigned-byte IDX file (raw or .gz) into an array of the shape its header gives.

    Only as many bytes as the header promises are read, so a gzip bomb inflates no further.
    """
    try:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] != _UBYTE:
                raise DataError(
                    f"{path} is not an unsigned-byte IDX file (its header is {head.hex()}); "
                    "replace it with a good copy."
                )
            dims = f.read(4 * head[3])
            if len(dims) < 4 * head[3]:
                raise DataError(f"{path} ends inside its header; replace it with a good copy.")
            shape = tuple(int(d) for d in np.frombuffer(dims, dtype=">u4"))
            size = math.prod(shape)  # Python ints: four uint32 dimensions overflow int64
            if size > _MAX_VALUES:
                raise DataError(
                    f"{path} promises {shape} values, more than an IDX file convnet reads; replace it with a good copy."
                )
            raw = f.read(size + 1)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path} cannot be read ({e}); replace it with a good copy.") from e
    if len(raw) != size:
        got = f"{len(raw)}" if len(raw) <= size else "more"
        raise DataError(f"{path} holds {got} values where its header promises {shape}; replace it with a good copy.")
    return np.frombuffer(raw, dtype=np.uint8).reshape(shape)


def load_fashion_mnist(folder: str | Path = DEFAULT_DIR, split: str = "train") -> Dataset:
    """Read one split ("train" or "test", one of `idx_splits(folder)`) as 1-channel 28x28 images."""
    folder = Path(folder).resolve()
    image_name, label_name = FILES[split]
    images = read_idx(idx_file(folder, image_name))
    labels = read_idx(idx_file(folder, label_name))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels) or 0 in images.shape:
        raise DataError(
            f"The {split} files in {folder} hold images {images.shape} and labels {labels.shape}, "
            "not (N, H, W) and (N,); replace them with good copies."
        )
    if labels.size and labels.max() >= len(CLASSES):
        raise DataError(
            f"The {split} labels in {folder} go up to {labels.max()}, beyond Fashion-MNIST's {len(CLASSES)} classes; "
            "replace them with good copies."
        )
    return Dataset(
        images=torch.from_numpy(images[:, None].copy()),  # (N, 1, H, W); copy: frombuffer arrays are read-only
        labels=torch.from_numpy(labels.astype(np.int64)),
        classes=CLASSES,
        source=f"{DESCRIPTION} {folder} ({split})",
    )
