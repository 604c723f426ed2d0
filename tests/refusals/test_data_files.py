"""The catalog of data files convnet refuses, and how (issue 9, parts 1 and 5).

Every case is a real file written here in its real format, or an entry a careless or hostile
user could leave in a folder. The rule for each: no hang, no traceback, one sentence; a data
set skips what it cannot read with one warning, `predict` gives the file its own error line and
a non-zero exit, a command that cannot go on exits with status 2.
"""
from __future__ import annotations

import gzip
import json
import os
import pickle
import struct
import subprocess
import sys
import warnings

import numpy as np
import pytest

from convnet.data.image_folder import DataWarning
from convnet.data.sources import load_dataset
from convnet.errors import DataError
from tests.refusals.conftest import (
    ODD_ENTRIES,
    as_archive,
    assert_one_sentence,
    cifar_batch,
    make_entry,
    no_hang,
    png_bytes,
    write_cifar,
)

# --- odd entries in an image folder: skipped with one warning -------------------------------


def two_class_folder(root):
    for cls, colour in (("cat", (200, 30, 30)), ("dog", (30, 30, 200))):
        (root / cls).mkdir(parents=True)
        for i in range(2):
            (root / cls / f"{i}.png").write_bytes(png_bytes(colour=colour))
    return root


@pytest.mark.parametrize("kind", ODD_ENTRIES)
def test_an_odd_entry_in_an_image_folder_is_skipped_with_a_warning(kind, tmp_path):
    folder = two_class_folder(tmp_path / "data")
    make_entry(folder / "cat" / "odd.png", kind)
    with no_hang(), pytest.warns(DataWarning) as caught:
        ds = load_dataset(folder)
    assert len(ds) == 4 and ds.classes == ("cat", "dog")
    message = str(caught[-1].message)
    assert "cat/odd.png" in message and "\n" not in message


def test_a_folder_named_like_an_image_is_a_folder(tmp_path):
    folder = two_class_folder(tmp_path / "data")
    (folder / "cat" / "more.png").mkdir()
    (folder / "cat" / "more.png" / "2.png").write_bytes(png_bytes())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_dataset(folder)) == 5


def test_a_looping_linked_folder_is_not_followed(tmp_path):
    folder = two_class_folder(tmp_path / "data")
    os.symlink("..", folder / "cat" / "up")
    os.symlink(folder / "dog", folder / "cat" / "sideways")
    with no_hang(), warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_dataset(folder)) == 4


def test_a_name_that_is_not_utf8_is_read_and_shown_escaped(tmp_path):
    folder = two_class_folder(tmp_path / "data")
    good, bad = os.fsencode(folder / "cat") + b"/\xff\xfe.png", os.fsencode(folder / "dog") + b"/\xfd.png"
    with open(good, "wb") as f:
        f.write(png_bytes())
    with open(bad, "wb") as f:
        f.write(b"not an image")
    with pytest.warns(DataWarning, match=r"dog/\\xfd\.png"):
        assert len(load_dataset(folder)) == 5
    # The printed warning, through a strict UTF-8 stderr as a terminal has it.
    argv = [sys.executable, "-m", "convnet", "show-data", "--data", folder, "--out", tmp_path / "grid.png"]
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}
    done = subprocess.run(argv, capture_output=True, text=True, errors="strict", env=env, timeout=60)
    assert done.returncode == 0 and "Traceback" not in done.stderr
    assert_one_sentence(done.stderr, "warning: Skipped 1 ", r"dog/\xfd.png")


@pytest.mark.parametrize("kind", ["fifo", "symlink loop", "dangling symlink", "socket"])
def test_data_that_is_an_odd_entry_is_one_sentence(kind, tmp_path, convnet):
    make_entry(tmp_path / "data", kind)
    result = convnet("show-data", "--data", tmp_path / "data", "--out", tmp_path / "grid.png")
    assert result.status == 2
    assert_one_sentence(result.err, "error: ", "data")
    assert not (tmp_path / "grid.png").exists()


# --- predict: each file its own error line ------------------------------------------------


@pytest.mark.parametrize("kind", ODD_ENTRIES)
def test_predict_gives_an_odd_file_an_error_line(kind, model_file, tmp_path, convnet):
    (tmp_path / "good.png").write_bytes(png_bytes())
    make_entry(tmp_path / "odd.png", kind)
    result = convnet("predict", model_file, tmp_path / "good.png", tmp_path / "odd.png")
    assert result.status == 1
    assert len(result.out.strip().splitlines()) == 1 and "good.png" in result.out
    assert_one_sentence(result.err, "error: ", "odd.png")
    assert result.err.count(str(tmp_path / "odd.png")) == 1, (
        "the file is named once, not once by predict and again by the reader")

    result = convnet("predict", model_file, tmp_path / "good.png", tmp_path / "odd.png", "--json")
    answers = [json.loads(line) for line in result.out.strip().splitlines()]
    assert result.status == 1 and "Traceback" not in result.err
    assert [sorted(a) for a in answers] == [["path", "predictions"], ["error", "path"]]
    assert answers[1]["path"].endswith("odd.png") and "\n" not in answers[1]["error"]


def test_predict_on_a_folder_gives_each_odd_entry_an_error_line(model_file, tmp_path, convnet):
    (tmp_path / "good.png").write_bytes(png_bytes())
    odd = [f"{i:02d}-{kind.replace(' ', '-')}.png" for i, kind in enumerate(ODD_ENTRIES)]
    for name, kind in zip(odd, ODD_ENTRIES, strict=True):
        make_entry(tmp_path / name, kind)
    result = convnet("predict", model_file, tmp_path)
    assert result.status == 1 and "Traceback" not in result.err
    assert len(result.out.strip().splitlines()) == 1 and "good.png" in result.out
    lines = result.err.strip().splitlines()
    # one line each, in order
    assert [[name for name in odd if name in line] for line in lines] == [[name] for name in odd]


def test_predict_on_a_folder_named_like_an_image_with_none_inside(model_file, tmp_path, convnet):
    (tmp_path / "x.png").mkdir()
    result = convnet("predict", model_file, tmp_path / "x.png")
    assert result.status == 2
    assert_one_sentence(result.err, "No image files found", "x.png")


@pytest.mark.parametrize("output", ["text", "json"])
def test_predict_prints_names_that_are_not_utf8_escaped(output, model_file, tmp_path, convnet):
    folder = tmp_path / "pics"
    folder.mkdir()
    with open(os.fsencode(folder) + b"/\xff\xfe.png", "wb") as f:
        f.write(png_bytes())
    with open(os.fsencode(folder) + b"/\xfd.png", "wb") as f:
        f.write(b"")
    result = convnet("predict", model_file, folder, *(["--json"] if output == "json" else []))
    assert result.status == 1 and "Traceback" not in result.err
    if output == "json":
        shown = " ".join(answer["path"] for answer in map(json.loads, result.out.splitlines()))
    else:
        shown = result.out + result.err
    assert r"\xff\xfe.png" in shown and r"\xfd.png" in shown
    shown.encode("utf-8")  # strict: no lone surrogates reached the output


# --- output paths that cannot be written -------------------------------------------------


def test_show_data_out_that_cannot_be_written(tmp_path, colour_folder, convnet):
    (tmp_path / "a-file").write_text("keep me")
    (tmp_path / "folder.png").mkdir()
    for out in (tmp_path / "a-file" / "grid.png", tmp_path / "folder.png"):
        result = convnet("show-data", "--data", colour_folder, "-n", "2", "--out", out)
        assert result.status == 2
        assert_one_sentence(result.err, "error: ", "--out")
    assert (tmp_path / "a-file").read_text() == "keep me" and not any((tmp_path / "folder.png").iterdir())


@pytest.mark.parametrize("command", ["features", "cam"])
@pytest.mark.parametrize("where", ["an existing file", "below a file"])
def test_features_and_cam_out_that_is_not_a_folder(command, where, model_file, tmp_path, convnet):
    image = tmp_path / "in.png"
    image.write_bytes(png_bytes((24, 24)))
    (tmp_path / "somefile").write_text("keep me")
    out = tmp_path / "somefile" if where == "an existing file" else tmp_path / "somefile" / "sub"
    result = convnet(command, model_file, image, "--out", out)
    assert result.status == 2
    assert_one_sentence(result.err, "error: ", "--out")
    assert (tmp_path / "somefile").read_text() == "keep me"


@pytest.mark.parametrize("command", ["features", "cam"])
@pytest.mark.parametrize("kind", ["fifo", "symlink loop", "zero bytes", "decompression bomb", "truncated png"])
def test_features_and_cam_refuse_an_odd_image(command, kind, model_file, tmp_path, convnet):
    make_entry(tmp_path / "in.png", kind)
    result = convnet(command, model_file, tmp_path / "in.png", "--out", tmp_path / "out")
    assert result.status == 2
    assert_one_sentence(result.err, "error: ", "in.png")
    assert not (tmp_path / "out").exists()


# --- CIFAR-10 batches that are not what they claim ---------------------------------------


def batch_with(**changes) -> bytes:
    batch = cifar_batch()
    for key, value in changes.items():
        if value is None:
            del batch[key.encode()]
        else:
            batch[key.encode()] = value
    return pickle.dumps(batch, protocol=2)


def oversized_batch(rows: int = 1_000_000) -> bytes:
    """A batch whose data is `numpy.ndarray((rows, 3072), "u1")` called by the pickle itself, with
    allowed globals only: gigabytes of uninitialised memory claimed by a file of 60 bytes."""
    shape = b"J" + struct.pack("<i", rows) + b"M" + struct.pack("<H", 3072) + b"\x86"  # BININT, BININT2, TUPLE2
    call = b"cnumpy\nndarray\n" + shape + b"X" + struct.pack("<I", 2) + b"u1" + b"\x86R"  # GLOBAL, args, REDUCE
    # {b"labels": [0, 1], b"data": ...}
    return b"\x80\x02}(" + b"C\x06labels](K\x00K\x01e" + b"C\x04data" + call + b"u."


CIFAR_CASES = {
    "labels one short": {"data_batch_2": batch_with(labels=[1])},
    "labels one too many": {"data_batch_2": batch_with(labels=[1, 2, 3])},
    "label 10": {"data_batch_3": batch_with(labels=[0, 10])},
    "negative label": {"data_batch_3": batch_with(labels=[-1, 0])},
    "labels as text": {"data_batch_1": batch_with(labels="01")},
    "float labels": {"data_batch_1": batch_with(labels=[0.0, 1.0])},
    "labels missing": {"data_batch_1": batch_with(labels=None)},
    "float32 data": {"data_batch_4": batch_with(data=np.zeros((2, 3072), np.float32))},
    "rows of the wrong length": {"data_batch_4": batch_with(data=np.zeros((2, 1024), np.uint8))},
    "flat data": {"data_batch_5": batch_with(data=np.zeros(6144, np.uint8))},
    "data as a list": {"data_batch_5": batch_with(data=[[0] * 3072] * 2)},
    "batch is a list": {"data_batch_1": pickle.dumps([1, 2, 3], protocol=2)},
    "truncated pickle": {"data_batch_1": batch_with()[:100]},
    "empty file": {"data_batch_1": b""},
    "not a pickle": {"data_batch_1": b"\x89PNG\r\n\x1a\n"},
    "class names missing": {"batches.meta": pickle.dumps({b"num_vis": 3072}, protocol=2)},
    "class names as text": {"batches.meta": pickle.dumps({b"label_names": b"airplane"}, protocol=2)},
    "class named twice": {"batches.meta": pickle.dumps({b"label_names": [b"cat", b"cat"]}, protocol=2)},
    "class name not utf-8": {"batches.meta": pickle.dumps({b"label_names": [b"\xff", b"dog"]}, protocol=2)},
}


def assert_data_refused(data, tmp_path, convnet) -> None:
    """Loading `data` is one DataError sentence, and `show-data` on it exits 2 with one line."""
    with no_hang(), pytest.raises(DataError) as caught:
        load_dataset(data, "train")
    assert "\n" not in str(caught.value)
    result = convnet("show-data", "--data", data, "--out", tmp_path / "grid.png")
    assert result.status == 2
    assert_one_sentence(result.err, "error: ")


@pytest.mark.parametrize("packed", ["folder", "archive"])
@pytest.mark.parametrize("case", list(CIFAR_CASES))
def test_a_bad_cifar_batch_is_a_data_error(case, packed, tmp_path, convnet):
    folder = write_cifar(tmp_path, CIFAR_CASES[case])
    data = folder if packed == "folder" else as_archive(folder)
    assert_data_refused(data, tmp_path, convnet)


def test_a_batch_claiming_more_images_than_its_bytes_is_refused(tmp_path):
    folder = write_cifar(tmp_path, {"data_batch_1": oversized_batch()})
    with no_hang(), pytest.raises(DataError, match="more than the file holds"):
        load_dataset(folder, "train")


# --- Fashion-MNIST IDX files that lie -----------------------------------------------------


def idx(array: np.ndarray, magic: int | None = None) -> bytes:
    magic = 0x0800 + array.ndim if magic is None else magic
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes()


IMAGES = np.zeros((3, 28, 28), np.uint8)
LABELS = np.array([0, 1, 2], np.uint8)
IDX_CASES = {  # file -> bytes, over a good set of four
    "images truncated": {"train-images-idx3-ubyte": idx(IMAGES)[:-10]},
    "labels with extra bytes": {"train-labels-idx1-ubyte": idx(LABELS) + b"\x00"},
    "float type byte": {"train-images-idx3-ubyte": idx(IMAGES, magic=0x0D03)},
    "wrong magic": {"train-images-idx3-ubyte": b"PK\x03\x04" + idx(IMAGES)[4:]},
    "empty file": {"train-labels-idx1-ubyte": b""},
    "header cut short": {"train-images-idx3-ubyte": idx(IMAGES)[:9]},
    "255 dimensions promised": {"train-images-idx3-ubyte": b"\x00\x00\x08\xff" + b"\x00\x00\x00\x01" * 3},
    "dimensions beyond any memory": {
        "train-images-idx3-ubyte": struct.pack(">IIII", 0x0803, 2**32 - 1, 2**32 - 1, 2**32 - 1)},
    "counts disagree": {"train-labels-idx1-ubyte": idx(LABELS[:2])},
    "label 10": {"train-labels-idx1-ubyte": idx(np.array([0, 1, 10], np.uint8))},
    "labels with two dimensions": {"train-labels-idx1-ubyte": idx(LABELS.reshape(3, 1))},
    "images of zero width": {"train-images-idx3-ubyte": idx(np.zeros((3, 28, 0), np.uint8))},
    "gzip cut short": {"train-images-idx3-ubyte.gz": gzip.compress(idx(IMAGES))[:-12]},
    "gzip with damaged data": {"train-images-idx3-ubyte.gz": gzip.compress(idx(IMAGES))[:30] + b"\xff" * 40},
    "gzip bomb behind a small header": {
        "train-images-idx3-ubyte.gz": gzip.compress(idx(IMAGES) + bytes(50_000_000), 1)},
}


@pytest.mark.parametrize("case", list(IDX_CASES))
def test_a_bad_idx_file_is_a_data_error(case, tmp_path, convnet):
    folder = tmp_path / "fashion"
    folder.mkdir()
    files = {"train-images-idx3-ubyte": idx(IMAGES), "train-labels-idx1-ubyte": idx(LABELS)}
    for name, data in IDX_CASES[case].items():
        files.pop(name.removesuffix(".gz"), None)
        files[name] = data
    for name, data in files.items():
        (folder / name).write_bytes(data)
    assert_data_refused(folder, tmp_path, convnet)
