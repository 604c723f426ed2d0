"""The one function that turns an image file into model input, for training and prediction alike.

Any format Pillow reads, any mode (grayscale, RGBA, palette, 16-bit, EXIF-rotated) becomes a
uint8 (C, H, W) tensor of the model's size and channel count. Using the same function on both
sides is what keeps a model's predictions on user files consistent with how it was trained.
"""
from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from convnet.files import kind_of_mode

IMAGE_SUFFIXES = frozenset((".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"))


def is_image_file(path: str | os.PathLike) -> bool:
    """Whether the name says image: a known suffix, not hidden (takes plain strings, which are cheap by the 50,000)."""
    name = os.path.basename(path)
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES and not name.startswith(".")


def display_name(path: str | os.PathLike) -> str:
    """A file name, or a message holding one, that prints on any UTF-8 stream: bytes that are not
    UTF-8 (which `os.fsdecode` keeps as lone surrogates, which a strict stream refuses) are shown
    as escapes like \\xff."""
    text = os.fspath(path)
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that no file name decodes to
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def find_image_files(root: str | os.PathLike, folder: str = "") -> tuple[list[str], list[str]]:
    """Image-named entries below root/folder at any depth, as sorted paths relative to `root`.

    Hidden entries are passed over, and so are linked folders, which could loop. `os.scandir`
    tells regular files from folders without a stat call per file; only links and odd entries
    are stat'ed.
    Returns:
        (files, others): regular files (or links to one), and the entries that are not (FIFOs,
        sockets, devices, broken or looping links), which cannot be read as images.
    """
    files: list[str] = []
    others: list[str] = []
    pending = [folder]
    while pending:
        sub = pending.pop()
        with os.scandir(os.path.join(root, sub)) as entries:
            for entry in entries:
                name = f"{sub}/{entry.name}" if sub else entry.name
                if entry.name.startswith("."):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    pending.append(name)
                elif is_image_file(entry.name):
                    regular = entry.is_file(follow_symlinks=False) or is_regular_file(entry.path)
                    (files if regular else others).append(name)
    return sorted(files), sorted(others)


def is_regular_file(path: str | os.PathLike) -> bool:
    """Whether `path` is a regular file or a link to one; False for anything that cannot be stat'ed."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):  # ValueError: a NUL in the name
        return False


@contextmanager
def open_image(path: str | os.PathLike) -> Iterator[Image.Image]:
    """`Image.open` on a path, refusing anything but a regular file before a byte is read.

    Opening a FIFO for reading waits for a writer, forever if none comes: the file is opened
    without blocking and checked with fstat, so the check and the read see the same file.
    Raises:
        OSError (missing file, looping link, socket...) or ValueError (a folder, FIFO or device).
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ValueError(f"it is {kind_of_mode(mode)}, not a regular file")
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f, Image.open(f) as img:
        yield img


def _to_8bit(img: Image.Image) -> Image.Image:
    """16- and 32-bit integer or float images scaled down to 8 bits per channel."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        if img.mode == "F" and arr.max() <= 1.0:
            top = 1.0
        return Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    return img


def _to_channels(img: Image.Image, channels: int) -> Image.Image:
    if channels == 1:
        return img.convert("L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Transparent pixels go on white, as a viewer shows them, not on whatever colour they hide.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def pil_to_tensor(img: Image.Image, size: tuple[int, int], channels: int) -> torch.Tensor:
    """Convert a Pillow image to model input.

    Args:
        img: any Pillow image; EXIF orientation is applied.
        size: (H, W) of the output. The shorter side is resized to fit and the centre cropped,
            so the aspect ratio is kept.
        channels: 1 (grayscale) or 3 (RGB).
    Returns:
        uint8 tensor (channels, H, W).
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    img = ImageOps.exif_transpose(img)
    img = _to_channels(_to_8bit(img), channels)
    h, w = size
    if img.size != (w, h):
        img = ImageOps.fit(img, (w, h), method=Image.Resampling.BILINEAR, centering=(0.5, 0.5))
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())


def load_image(path: str | Path, size: tuple[int, int], channels: int) -> torch.Tensor:
    """Read an image file and convert it with `pil_to_tensor`.

    Raises:
        OSError or ValueError (from Pillow or `open_image`) when the file is not a readable image,
        Image.DecompressionBombError when it claims too many pixels.
    """
    with open_image(path) as img:
        img.load()
        return pil_to_tensor(img, size, channels)


def natural_channels(img: Image.Image) -> int:
    """1 for grayscale modes, 3 for everything else: how many channels a model should read."""
    return 1 if img.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F") else 3
