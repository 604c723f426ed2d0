"""Fixtures that write small datasets in the official formats, independently of the code under test."""
from __future__ import annotations

import gzip
import pickle
import struct
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
PER_BATCH = 2  # images in each tiny CIFAR-10 batch


@pytest.fixture(autouse=True)
def convnet_home(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets its own empty cache home, so none reads or writes ~/.cache/convnet."""
    home = tmp_path_factory.mktemp("convnet_home")
    monkeypatch.setenv("CONVNET_HOME", str(home))
    return home


@dataclass
class TinyCifar:
    folder: Path  # .../cifar-10-batches-py
    archive: Path  # .../cifar-10-python.tar.gz holding that folder
    data: dict[str, np.ndarray]  # split -> (N, 3072) uint8 rows as written
    labels: dict[str, list[int]]
    per_batch: int = PER_BATCH


@pytest.fixture
def tiny_cifar(tmp_path) -> TinyCifar:
    """CIFAR-10's layout with 2 images per batch: pickled dicts with bytes keys, as the release has."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "extracted" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    data, labels = {"train": [], "test": []}, {"train": [], "test": []}
    batches = [("train", f"data_batch_{i}") for i in range(1, 6)] + [("test", "test_batch")]
    for split, name in batches:
        rows = rng.integers(0, 256, size=(PER_BATCH, 3072), dtype=np.uint8)
        batch_labels = [int(x) for x in rng.integers(0, 10, size=PER_BATCH)]
        batch = {b"batch_label": name.encode(), b"labels": batch_labels, b"data": rows,
                 b"filenames": [b"x.png"] * PER_BATCH}
        # Protocol 2, as Python 2's cPickle wrote the release.
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        data[split].append(rows)
        labels[split] += batch_labels
    meta = {b"label_names": [n.encode() for n in CIFAR_NAMES], b"num_cases_per_batch": PER_BATCH, b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    archive = tmp_path / "download" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    return TinyCifar(folder, archive, {k: np.concatenate(v) for k, v in data.items()}, labels)


def write_idx(path: Path, array: np.ndarray) -> None:
    """An unsigned-byte IDX file: magic 0x00000800 + ndim (0x803 for images, 0x801 for labels),
    big-endian uint32 dims, then the bytes."""
    header = struct.pack(f">I{array.ndim}I", 0x0800 + array.ndim, *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)


@dataclass
class TinyIdx:
    folder: Path
    images: dict[str, np.ndarray]  # split -> (N, 28, 28) as written
    labels: dict[str, np.ndarray]


@pytest.fixture(params=["raw", "gz"])
def tiny_idx(request, tmp_path) -> TinyIdx:
    """Fashion-MNIST's four files, 5 train and 3 test images, raw or gzipped."""
    rng = np.random.default_rng(1)
    suffix = ".gz" if request.param == "gz" else ""
    folder = tmp_path / "fashion"
    folder.mkdir()
    images, labels = {}, {}
    for split, prefix, n in (("train", "train", 5), ("test", "t10k", 3)):
        images[split] = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels[split] = rng.integers(0, 10, size=n).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images[split])
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels[split])
    return TinyIdx(folder, images, labels)
