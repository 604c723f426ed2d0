"""CIFAR-10 in its official python format, downloaded into the cache home on first use.

The release (Krizhevsky, 2009) is `cifar-10-python.tar.gz`, holding `cifar-10-batches-py/` with
`data_batch_1` .. `data_batch_5` (the "train" split, 50,000 images), `test_batch` ("test", 10,000)
and `batches.meta`. Each batch is a Python 2 pickle of a dict: b"data" is a (10000, 3072) uint8
array, each row the red, green and blue 32x32 planes in row-major order; b"labels" is a list of
ints; batches.meta's b"label_names" names the 10 classes. Either the archive or the extracted
folder is read as it is; nothing is unpacked to disk.
"""
from __future__ import annotations

import hashlib
import http.client
import io
import pickle
import tarfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from tqdm import tqdm

from convnet.data.cache import atomic_write, cache_home
from convnet.data.dataset import Dataset
from convnet.errors import DataError

DESCRIPTION = "CIFAR-10 (official python format)"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
META = "batches.meta"
BATCHES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
SPLITS = tuple(BATCHES)
_MAX_MEMBER_BYTES = 64 << 20  # a release batch is 31 MB; anything far bigger is not one, and is not read
_ARRAY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),  # as written by the numpy of 2009
    ("numpy._core.multiarray", "_reconstruct"),  # as written by numpy 2
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # bytes in pickles written by Python 3 with protocol 2
}


def find_cifar10(path: Path) -> Path | None:
    """The CIFAR-10 copy `path` is or holds (the archive or the batches folder), or None."""
    if path.is_file():
        return path if path.name.endswith((".tar.gz", ".tgz")) else None
    if not path.is_dir():
        return None
    if any((path / name).is_file() for name in (META, *BATCHES["test"], *BATCHES["train"])):
        return path
    for candidate in (path / FOLDER, path / ARCHIVE):
        if candidate.exists():
            return candidate
    return None


def cached_cifar10(download: bool = True) -> Path:
    """The copy in the cache home, downloading the archive there first when there is none."""
    home = cache_home()
    found = find_cifar10(home)
    if found is not None:
        return found
    if not download:
        raise DataError(f"CIFAR-10 is not in {home}; put {ARCHIVE} there or pass --data with the dataset to use.")
    return download_cifar10(home / ARCHIVE)


def download_cifar10(dest: Path, url: str = URL, md5: str = MD5, timeout: float = 60.0) -> Path:
    """Download the archive to `dest` and check its MD5; a failed download leaves no file behind.

    Raises:
        DataError: the server cannot be reached, the transfer breaks, or the MD5 differs.
    """
    advice = f"put {ARCHIVE} at {dest} yourself or pass --data with the dataset to use"

    def fetch(tmp: str) -> None:
        digest = hashlib.md5(usedforsecurity=False)  # a checksum, not security
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {ARCHIVE}", disable=None) as bar:
                while block := response.read(1 << 20):
                    out.write(block)
                    digest.update(block)
                    bar.update(len(block))
        if digest.hexdigest() != md5:
            raise DataError(
                f"The file downloaded from {url} is damaged (MD5 {digest.hexdigest()}, expected {md5}); "
                f"try again, or {advice}."
            )

    try:
        atomic_write(dest, fetch)
    except (OSError, http.client.HTTPException) as e:  # URLError and timeouts are OSErrors
        reason = (f"HTTP {e.code} {e.reason}" if isinstance(e, urllib.error.HTTPError)
                  else getattr(e, "reason", None) or e)
        raise DataError(f"Could not download CIFAR-10 from {url} ({reason}); {advice}.") from e
    return dest


def load_cifar10(path: str | Path, split: str) -> Dataset:
    """Read one split from the archive or the batches folder.

    Args:
        path: `cifar-10-python.tar.gz` or the extracted `cifar-10-batches-py/` (see `find_cifar10`).
        split: "train" or "test".
    """
    path = Path(path).resolve()
    members = _read_members(path, (META, *BATCHES[split]))
    classes = _class_names(_unpickle(members[META], path), path)
    images, labels = [], []
    for name in BATCHES[split]:
        batch = _unpickle(members[name], path)
        data = _field(batch, "data")
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            kind = (f"{data.dtype} data of shape {data.shape}" if isinstance(data, np.ndarray)
                    else f"a {type(data).__name__}")
            raise DataError(
                f"{name} in {path} holds {kind}, not CIFAR-10's (N, 3072) uint8 array; download the archive again."
            )
        if data.nbytes > len(members[name]):
            # Only numpy's ndarray(shape) constructor, callable from a pickle, makes an array
            # larger than the file: uninitialised memory, which copying would fill.
            raise DataError(
                f"{name} in {path} claims {data.shape[0]} images, more than the file holds; download the archive again."
            )
        images.append(data.reshape(-1, 3, 32, 32))  # rows are R, G, B planes of 32x32
        labels.append(_labels(_field(batch, "labels"), len(data), len(classes), f"{name} in {path}"))
    return Dataset(
        images=torch.from_numpy(np.concatenate(images)),
        labels=torch.from_numpy(np.concatenate(labels)),
        classes=classes,
        source=f"{DESCRIPTION} {path} ({split})",
    )


def _read_members(path: Path, names: tuple[str, ...]) -> dict[str, bytes]:
    """The named batch files' bytes, from the folder or the archive, matched by file name."""
    found = {}
    try:
        if path.is_dir():
            # is_file: a FIFO or device named like a batch is not one, and opening a FIFO would block.
            present = [name for name in names if (path / name).is_file()]
            for name in present:
                _check_size(name, (path / name).stat().st_size, path)
            found = {name: (path / name).read_bytes() for name in present}
        else:
            with tarfile.open(path, "r:gz") as tar:
                for member in tar:  # one pass: seeking backwards in a gzip stream decompresses again
                    name = PurePosixPath(member.name).name
                    if name in names and member.isfile():
                        _check_size(name, member.size, path)
                        found[name] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path} is not a readable {ARCHIVE} ({e}); download it again.") from e
    missing = [name for name in names if name not in found]
    if missing:
        raise DataError(
            f"{path} lacks {', '.join(missing)}; pass the {ARCHIVE} archive or its extracted {FOLDER} folder."
        )
    return found


def _check_size(name: str, size: int, path: Path) -> None:
    if size > _MAX_MEMBER_BYTES:
        raise DataError(
            f"{name} in {path} is {size:,} bytes, too large for a CIFAR-10 batch; download the archive again."
        )


def _class_names(meta: dict, path: Path) -> tuple[str, ...]:
    """batches.meta's label_names as str: a list of distinct names, bytes as the release has them or str."""
    names = _field(meta, "label_names")
    if not isinstance(names, list) or len(names) < 2 or not all(isinstance(n, (bytes, str)) for n in names):
        raise DataError(f"{META} in {path} does not name the classes as a list of strings; download the archive again.")
    try:
        classes = tuple(n.decode() if isinstance(n, bytes) else n for n in names)
    except UnicodeDecodeError:
        raise DataError(
            f"{META} in {path} names a class in bytes that are not UTF-8; download the archive again."
        ) from None
    if len(set(classes)) != len(classes):
        raise DataError(f"{META} in {path} names a class twice; download the archive again.")
    return classes


def _labels(raw: object, n_images: int, n_classes: int, where: str) -> np.ndarray:
    """A batch's labels as int64 (N,), checked: one integer in [0, n_classes) per image."""
    if ((isinstance(raw, np.ndarray) and raw.dtype.kind in "iu")
            or (isinstance(raw, list) and all(type(x) is int for x in raw))):
        # object: ints beyond int64 stay exact
        labels = np.asarray(raw, dtype=object if isinstance(raw, list) else None)
        if labels.shape != (n_images,):
            raise DataError(
                f"{where} has labels of shape {labels.shape} for {n_images} images; download the archive again."
            )
        if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
            raise DataError(
                f"{where} has labels from {labels.min()} to {labels.max()}, "
                f"outside the {n_classes} classes (0 to {n_classes - 1}); "
                "download the archive again."
            )
        return labels.astype(np.int64)
    raise DataError(f"{where} has labels that are not a list of integers; download the archive again.")


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists and numpy arrays only: a pickle can otherwise run any code."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ARRAY_GLOBALS:
            raise pickle.UnpicklingError(f"{module}.{name} is not part of a CIFAR-10 batch")
        return super().find_class(module, name)


def _unpickle(data: bytes, path: Path) -> dict:
    try:
        # The batches were pickled by Python 2: its str keys and raw array bytes are kept as bytes.
        batch = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:  # a damaged pickle can raise nearly anything
        reason = " ".join(str(e).split())  # some of pickle's messages span lines
        raise DataError(
            f"{path} holds a batch that is not a CIFAR-10 pickle ({reason}); download the archive again."
        ) from e
    if not isinstance(batch, dict):
        kind = type(batch).__name__
        raise DataError(
            f"{path} holds a batch that is not a CIFAR-10 pickle (a {kind}, not a dict); download the archive again."
        )
    return batch


def _field(batch: dict, name: str):
    """A batch entry, whether its key was pickled as bytes (the release) or as str (a re-pickled copy)."""
    for key in (name.encode(), name):
        if key in batch:
            return batch[key]
    raise DataError(f"A CIFAR-10 batch lacks its {name!r} entry; download the archive again.")
