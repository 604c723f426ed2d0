"""What `--data` can name, recognised in one place: every command loads data through `load_dataset`.

    None or "cifar10"   CIFAR-10 in the cache home (`cache.cache_home()`), downloaded if missing
    "fashion-mnist"     Fashion-MNIST where Debian installs it (`fashion_mnist.DEFAULT_DIR`)
    "sample"            the 2,500 CIFAR-10 images shipped with convnet, as an image folder
    a path              cifar-10-python.tar.gz, cifar-10-batches-py/ (or a folder holding either),
                        a folder of IDX files, or an image folder; recognised in that order

The names are matched only when given as strings; write ./sample for a folder called sample.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from convnet.data import cifar10, fashion_mnist, image_folder
from convnet.data.cache import cache_home
from convnet.data.dataset import Dataset
from convnet.data.images import display_name, pil_to_tensor
from convnet.errors import DataError

SAMPLE_DIR = Path(__file__).parent / "sample" / "cifar10"
EXPECTED = (
    "cifar-10-python.tar.gz, its cifar-10-batches-py folder, a folder of Fashion-MNIST IDX files, "
    f"an image folder with {image_folder.LAYOUT}, or one of the names cifar10, fashion-mnist, sample"
)


@dataclass(frozen=True)
class Source:
    kind: str  # "cifar10", "fashion-mnist" or "image-folder"
    path: Path  # resolved; for CIFAR-10 in the cache home, where the archive goes if not there yet


_DESCRIPTIONS = {
    "cifar10": cifar10.DESCRIPTION,
    "fashion-mnist": fashion_mnist.DESCRIPTION,
    "image-folder": image_folder.DESCRIPTION,
}


def resolve_source(path: str | Path | None) -> Source:
    """Recognise what `path` names (see the module docstring); downloads nothing.

    Raises:
        DataError: the path does not exist or holds none of the known sources.
    """
    if path is None or path == "cifar10":
        home = cache_home()
        return Source("cifar10", cifar10.find_cifar10(home) or home / cifar10.ARCHIVE)
    if path == "fashion-mnist":
        if not fashion_mnist.idx_splits(fashion_mnist.DEFAULT_DIR):
            raise DataError(
                f"Fashion-MNIST is not in {fashion_mnist.DEFAULT_DIR}; install it with "
                "`apt-get install dataset-fashion-mnist` or pass --data with the folder holding its IDX files."
            )
        return Source("fashion-mnist", fashion_mnist.DEFAULT_DIR)
    if path == "sample":
        return Source("image-folder", SAMPLE_DIR)
    try:
        p = Path(path).expanduser().resolve()
    except (OSError, RuntimeError) as e:  # RuntimeError: a link that loops, before Python 3.13
        raise DataError(f"{display_name(path)} cannot be followed ({e}); pass {EXPECTED}.") from None
    if not p.exists():
        raise DataError(f"{p} does not exist; pass {EXPECTED}.")
    found = cifar10.find_cifar10(p)
    if found is not None:
        return Source("cifar10", found)
    if p.is_dir():
        return Source("fashion-mnist" if fashion_mnist.idx_splits(p) else "image-folder", p)
    raise DataError(f"{p} is not a dataset convnet can read; pass {EXPECTED}.")


def describe_source(path: str | Path | None) -> str:
    """E.g. "image folder /abs/path": what `path` names, for messages and run metadata."""
    return _describe(resolve_source(path))


def available_splits(path: str | Path | None) -> tuple[str, ...]:
    """The splits `path` holds; ("all",) for an image folder without train/val/test subfolders."""
    return _splits(resolve_source(path))


def load_dataset(
    path: str | Path | None = None,
    split: str = "train",
    *,
    image_size: tuple[int, int] | None = None,
    channels: int | None = None,
    download: bool = True,
) -> Dataset:
    """Load one split of any source into memory.

    Args:
        path: what `--data` gave (see the module docstring).
        split: "train", "val", "test", ...; a folder with one split ("all") is returned whole
            whatever split is asked, since that folder is the data to train or evaluate on.
        image_size: (H, W) to convert the images to; None keeps the source's size (an image
            folder's is that of its first image).
        channels: 1 or 3 to convert to; None keeps the source's channel count.
        download: whether CIFAR-10 may be downloaded into the cache home when it is not there.
    Raises:
        DataError: a missing or unreadable source, or a split it does not have.
    """
    source = resolve_source(path)
    splits = _splits(source)
    if split not in splits and splits != (image_folder.WHOLE,):
        raise DataError(f"{_describe(source)} has no {split!r} split; ask for one of: {', '.join(splits)}.")
    if source.kind == "image-folder":
        return image_folder.load_image_folder(source.path, split, image_size, channels)
    if source.kind == "fashion-mnist":
        ds = fashion_mnist.load_fashion_mnist(source.path, split)
    else:
        ds = cifar10.load_cifar10(source.path if source.path.exists() else cifar10.cached_cifar10(download), split)
    return _convert(ds, image_size, channels)


def _describe(source: Source) -> str:
    return f"{_DESCRIPTIONS[source.kind]} {source.path}"


def _splits(source: Source) -> tuple[str, ...]:
    if source.kind == "cifar10":
        return cifar10.SPLITS
    if source.kind == "fashion-mnist":
        return fashion_mnist.idx_splits(source.path)
    return image_folder.folder_splits(source.path)


def _convert(ds: Dataset, image_size: tuple[int, int] | None, channels: int | None) -> Dataset:
    """Resize or recolour every image with `pil_to_tensor`, as prediction would, when asked to."""
    c, h, w = ds.image_shape
    image_size, channels = image_size or (h, w), channels or c
    if (channels, *image_size) == (c, h, w):
        return ds
    hwc = ds.images.permute(0, 2, 3, 1).numpy()  # (N, H, W, C), as Pillow takes them
    pictures = (Image.fromarray(img[:, :, 0] if c == 1 else img) for img in hwc)
    images = torch.stack([pil_to_tensor(picture, image_size, channels) for picture in pictures])
    return Dataset(images, ds.labels, ds.classes, ds.source)
