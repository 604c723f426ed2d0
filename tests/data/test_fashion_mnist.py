"""Fashion-MNIST's IDX files, written here in the official format (raw and gzipped)."""
from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from convnet.data import fashion_mnist
from convnet.errors import DataError

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


@pytest.mark.parametrize("split", ["train", "test"])
def test_pixels_and_labels(tiny_idx, split):
    ds = fashion_mnist.load_fashion_mnist(tiny_idx.folder, split)
    images = tiny_idx.images[split]
    assert ds.images.shape == (len(images), 1, 28, 28)
    assert ds.labels.tolist() == tiny_idx.labels[split].tolist()
    assert ds.classes == CLASSES
    assert ds.images[1, 0, 3, 20] == images[1, 3, 20]  # image 1, row 3, column 20
    np.testing.assert_array_equal(ds.images[:, 0].numpy(), images)


def test_splits_need_both_files(tiny_idx):
    assert fashion_mnist.idx_splits(tiny_idx.folder) == ("train", "test")
    next(tiny_idx.folder.glob("t10k-labels*")).unlink()
    assert fashion_mnist.idx_splits(tiny_idx.folder) == ("train",)


def test_header_is_checked(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(struct.pack(">IIII", 0x00000D03, 1, 28, 28) + bytes(4 * 784))  # float IDX
    with pytest.raises(DataError, match="unsigned-byte IDX"):
        fashion_mnist.read_idx(path)


def test_short_file_is_a_data_error(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(struct.pack(">IIII", 0x00000803, 2, 28, 28) + bytes(784)))
    with pytest.raises(DataError, match="promises"):
        fashion_mnist.read_idx(path)


def test_damaged_gzip_is_a_data_error(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(struct.pack(">II", 0x00000801, 100) + bytes(100))[:30])
    with pytest.raises(DataError, match="cannot be read"):
        fashion_mnist.read_idx(path)


@pytest.mark.skipif(not fashion_mnist.idx_splits(fashion_mnist.DEFAULT_DIR),
                    reason="dataset-fashion-mnist is not installed")
def test_installed_copy_has_the_published_counts():
    train = fashion_mnist.load_fashion_mnist(split="train")
    test = fashion_mnist.load_fashion_mnist(split="test")
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.class_counts().tolist() == [6000] * 10
    assert test.class_counts().tolist() == [1000] * 10
