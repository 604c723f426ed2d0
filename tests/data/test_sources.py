"""`load_dataset` recognises each kind of source and each name, and refuses the rest clearly."""
from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convnet.data import fashion_mnist
from convnet.data.sources import available_splits, describe_source, load_dataset
from convnet.errors import DataError


def image_folder(root: Path, layout: str = "flat") -> Path:
    """Two classes, two 6x6 images each, solid grey levels 10, 20 (class a) and 30, 40 (class b)."""
    for label, name in enumerate(("a", "b")):
        for j in range(2):
            folder = root / (name if layout == "flat" else f"train/{name}")
            folder.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (6, 6), (10 * (2 * label + j + 1),) * 3).save(folder / f"{j}.png")
    return root


@pytest.mark.parametrize("form", ["archive", "folder", "folder above archive", "folder above folder"])
def test_cifar10_forms_are_recognised(tiny_cifar, form):
    path = {
        "archive": tiny_cifar.archive,
        "folder": tiny_cifar.folder,
        "folder above archive": tiny_cifar.archive.parent,
        "folder above folder": tiny_cifar.folder.parent,
    }[form]
    assert describe_source(path).startswith("CIFAR-10 (official python format) ")
    assert available_splits(path) == ("train", "test")
    ds = load_dataset(str(path), "test")
    assert ds.labels.tolist() == tiny_cifar.labels["test"]
    assert ds.images[0, 2, 31, 31] == tiny_cifar.data["test"][0, 3071]  # blue, last row, last column
    assert ds.source.endswith("(test)")


def test_cifar10_by_name_reads_the_cache_home(tiny_cifar, convnet_home):
    shutil.copy(tiny_cifar.archive, convnet_home / "cifar-10-python.tar.gz")
    assert load_dataset("cifar10", "train", download=False).labels.tolist() == tiny_cifar.labels["train"]
    assert len(load_dataset(None, "test", download=False)) == len(tiny_cifar.labels["test"])


def test_cifar10_missing_without_download_says_where_it_goes(convnet_home):
    with pytest.raises(DataError, match=f"not in {convnet_home}"):
        load_dataset(None, "train", download=False)


def test_cifar10_has_no_val_split(tiny_cifar):
    with pytest.raises(DataError, match="no 'val' split; ask for one of: train, test"):
        load_dataset(tiny_cifar.archive, "val")


def test_cifar10_converted_to_a_requested_size_and_channels(tiny_cifar, tmp_path):
    # Replace the test batch by one solid red image, then ask for 1-channel 16x16.
    rows = np.zeros((1, 3072), dtype=np.uint8)
    rows[0, :1024] = 255
    (tiny_cifar.folder / "test_batch").write_bytes(pickle.dumps({b"data": rows, b"labels": [3]}, protocol=2))
    ds = load_dataset(tiny_cifar.folder, "test", image_size=(16, 16), channels=1)
    assert ds.images.shape == (1, 1, 16, 16)
    assert (ds.images == (255 * 19595 + 32768) >> 16).all()  # ITU-R 601-2 luma of red, as Pillow rounds it


def test_idx_folder_is_recognised(tiny_idx):
    assert describe_source(tiny_idx.folder).startswith("Fashion-MNIST (IDX files) ")
    ds = load_dataset(tiny_idx.folder, "test")
    np.testing.assert_array_equal(ds.images[:, 0].numpy(), tiny_idx.images["test"])
    # Three channels and 32x32 on request, e.g. to evaluate a CIFAR-shaped model.
    assert load_dataset(tiny_idx.folder, "train", image_size=(32, 32), channels=3).images.shape == (5, 3, 32, 32)


def test_fashion_mnist_name_when_not_installed(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "DEFAULT_DIR", tmp_path / "nothing")
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist")


def test_fashion_mnist_name_when_installed(tiny_idx, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "DEFAULT_DIR", tiny_idx.folder)
    assert load_dataset("fashion-mnist", "train").labels.tolist() == tiny_idx.labels["train"].tolist()


def test_flat_image_folder_is_one_split_returned_whatever_is_asked(tmp_path):
    root = image_folder(tmp_path / "pics")
    assert available_splits(root) == ("all",)
    assert describe_source(root) == f"image folder {root.resolve()}"
    for split in ("train", "test"):
        ds = load_dataset(root, split)
        assert ds.images[:, 0, 0, 0].tolist() == [10, 20, 30, 40]
        assert ds.labels.tolist() == [0, 0, 1, 1]


def test_split_image_folder_refuses_a_missing_split(tmp_path):
    root = image_folder(tmp_path / "pics", layout="splits")
    assert available_splits(root) == ("train",)
    with pytest.raises(DataError, match="no 'test' split; ask for one of: train"):
        load_dataset(root, "test")


def test_the_shipped_sample(tmp_path):
    # The sample's README: 2,500 CIFAR-10 images, train/ 200 and test/ 50 per class, 32x32 RGB.
    assert available_splits("sample") == ("train", "test")
    ds = load_dataset("sample", "test")
    assert ds.images.shape == (500, 3, 32, 32)
    assert ds.class_counts().tolist() == [50] * 10
    assert ds.classes[0] == "airplane" and ds.classes[-1] == "truck"


def test_names_apply_only_to_strings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(Path("sample"))


def test_missing_path_says_what_was_expected(tmp_path):
    with pytest.raises(DataError, match="does not exist; pass cifar-10-python.tar.gz"):
        load_dataset(tmp_path / "nope")


def test_file_of_another_kind_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="not a dataset convnet can read"):
        load_dataset(tmp_path / "notes.txt")
