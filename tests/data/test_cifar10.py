"""CIFAR-10's python format, read from files written here in that format, and its download."""
from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import os
import pickle
import socket
import struct
import threading

import numpy as np
import pytest

from convnet.data import cifar10
from convnet.errors import DataError

CIFAR_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def expected_image(row: np.ndarray) -> np.ndarray:
    """(3, 32, 32) from one 3072-byte row, by the format's definition: R plane, G plane, B plane,
    each 32 rows of 32 pixels."""
    out = np.empty((3, 32, 32), dtype=np.uint8)
    for c in range(3):
        for y in range(32):
            for x in range(32):
                out[c, y, x] = row[1024 * c + 32 * y + x]
    return out


@pytest.mark.parametrize("form", ["archive", "folder"])
def test_train_split_pixels_and_labels(tiny_cifar, form):
    ds = cifar10.load_cifar10(tiny_cifar.archive if form == "archive" else tiny_cifar.folder, "train")
    rows = tiny_cifar.data["train"]
    assert ds.images.shape == (5 * tiny_cifar.per_batch, 3, 32, 32)
    assert ds.labels.tolist() == tiny_cifar.labels["train"]
    assert ds.classes == CIFAR_NAMES
    # The first image of data_batch_1 and the last of data_batch_5, pixel by pixel.
    for i in (0, len(rows) - 1):
        np.testing.assert_array_equal(ds.images[i].numpy(), expected_image(rows[i]))
    # Green channel, row 5, column 7 of the second image.
    assert ds.images[1, 1, 5, 7] == rows[1, 1024 + 5 * 32 + 7]


def test_test_split(tiny_cifar):
    ds = cifar10.load_cifar10(tiny_cifar.archive, "test")
    assert ds.labels.tolist() == tiny_cifar.labels["test"]
    np.testing.assert_array_equal(ds.images[-1].numpy(), expected_image(tiny_cifar.data["test"][-1]))
    assert "(test)" in ds.source


def test_find_cifar10_forms(tiny_cifar):
    assert cifar10.find_cifar10(tiny_cifar.archive) == tiny_cifar.archive
    assert cifar10.find_cifar10(tiny_cifar.archive.parent) == tiny_cifar.archive.parent / cifar10.ARCHIVE
    assert cifar10.find_cifar10(tiny_cifar.folder) == tiny_cifar.folder
    assert cifar10.find_cifar10(tiny_cifar.folder.parent) == tiny_cifar.folder
    assert cifar10.find_cifar10(tiny_cifar.folder / "batches.meta") is None


def python2_batch(rows: np.ndarray, labels: list[int]) -> bytes:
    """A batch pickled opcode by opcode as Python 2's cPickle (protocol 2) wrote the release:
    keys and raw array bytes are Python 2 str, and the array's class lives in numpy.core."""

    def short_str(b: bytes) -> bytes:  # SHORT_BINSTRING
        return b"U" + bytes([len(b)]) + b

    raw = rows.tobytes()
    dtype = (
        b"cnumpy\ndtype\n" + short_str(b"u1") + b"K\x00K\x01\x87R"
        + b"(K\x03" + short_str(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    )
    array = (
        b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n" + b"K\x00\x85" + short_str(b"b") + b"\x87R"
        + b"(K\x01" + b"K" + bytes([len(rows)]) + b"M\x00\x0c\x86" + dtype + b"\x89"
        + b"T" + struct.pack("<I", len(raw)) + raw + b"tb"
    )
    label_list = b"](" + b"".join(b"K" + bytes([x]) for x in labels) + b"e"
    return b"\x80\x02}" + short_str(b"labels") + label_list + b"s" + short_str(b"data") + array + b"s."


def test_python2_pickle(tiny_cifar):
    rows = np.random.default_rng(5).integers(0, 256, size=(3, 3072), dtype=np.uint8)
    (tiny_cifar.folder / "test_batch").write_bytes(python2_batch(rows, [9, 0, 4]))
    ds = cifar10.load_cifar10(tiny_cifar.folder, "test")
    assert ds.labels.tolist() == [9, 0, 4]
    np.testing.assert_array_equal(ds.images[2].numpy(), expected_image(rows[2]))


def test_missing_batch_is_named(tiny_cifar):
    (tiny_cifar.folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3"):
        cifar10.load_cifar10(tiny_cifar.folder, "train")
    # The test split does not need it.
    assert len(cifar10.load_cifar10(tiny_cifar.folder, "test")) == tiny_cifar.per_batch


def test_truncated_archive_is_a_data_error(tiny_cifar, tmp_path):
    raw = gzip.decompress(tiny_cifar.archive.read_bytes())
    broken = tmp_path / "cifar-10-python.tar.gz"
    broken.write_bytes(gzip.compress(raw)[:-2000])
    with pytest.raises(DataError, match="download it again"):
        cifar10.load_cifar10(broken, "train")


class _Mkdir:
    """Unpickling this calls os.mkdir: what a hostile 'batch' could do with any function."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_pickle_that_would_run_code_is_refused(tiny_cifar, tmp_path):
    marker = tmp_path / "pwned"
    (tiny_cifar.folder / "test_batch").write_bytes(pickle.dumps({b"data": _Mkdir(str(marker)), b"labels": []}))
    with pytest.raises(DataError, match="not a CIFAR-10 pickle"):
        cifar10.load_cifar10(tiny_cifar.folder, "test")
    assert not marker.exists()


def test_wrong_row_length_is_a_data_error(tiny_cifar):
    bad = {b"data": np.zeros((2, 784), np.uint8), b"labels": [0, 1]}
    (tiny_cifar.folder / "test_batch").write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(DataError, match="3072"):
        cifar10.load_cifar10(tiny_cifar.folder, "test")


# --- download, against a real HTTP server on 127.0.0.1 ---------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(tmp_path, tiny_cifar):
    """Serves tiny_cifar's archive at <url>/cifar-10-python.tar.gz."""
    handler = functools.partial(_QuietHandler, directory=str(tiny_cifar.archive.parent))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_download_checks_md5_and_loads(server, tiny_cifar, tmp_path):
    good_md5 = hashlib.md5(tiny_cifar.archive.read_bytes()).hexdigest()
    dest = tmp_path / "home" / cifar10.ARCHIVE
    assert cifar10.download_cifar10(dest, url=f"{server}/{cifar10.ARCHIVE}", md5=good_md5) == dest
    assert dest.read_bytes() == tiny_cifar.archive.read_bytes()
    assert os.listdir(dest.parent) == [cifar10.ARCHIVE]  # no temporary file left
    assert cifar10.load_cifar10(dest, "test").labels.tolist() == tiny_cifar.labels["test"]


def test_md5_mismatch_leaves_no_file(server, tmp_path):
    dest = tmp_path / "home" / cifar10.ARCHIVE
    with pytest.raises(DataError, match="damaged"):
        cifar10.download_cifar10(dest, url=f"{server}/{cifar10.ARCHIVE}", md5="0" * 32)
    assert os.listdir(dest.parent) == []


def test_missing_file_on_server_is_a_data_error(server, tmp_path):
    dest = tmp_path / "home" / cifar10.ARCHIVE
    with pytest.raises(DataError, match="HTTP 404"):
        cifar10.download_cifar10(dest, url=f"{server}/nothing.tar.gz")
    assert not dest.exists()


def test_unreachable_server_says_where_to_put_the_file(tmp_path):
    with socket.socket() as s:  # a port that was just free, so nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dest = tmp_path / "home" / cifar10.ARCHIVE
    with pytest.raises(DataError) as err:
        cifar10.download_cifar10(dest, url=f"http://127.0.0.1:{port}/{cifar10.ARCHIVE}", timeout=5)
    assert str(dest) in str(err.value) and "--data" in str(err.value)
    assert not dest.exists()


def test_cached_copy_in_home_is_used(tiny_cifar, convnet_home):
    (convnet_home / cifar10.ARCHIVE).write_bytes(tiny_cifar.archive.read_bytes())
    assert cifar10.cached_cifar10(download=False) == convnet_home / cifar10.ARCHIVE


def test_no_copy_and_no_download_names_the_home(convnet_home):
    with pytest.raises(DataError, match=str(convnet_home)):
        cifar10.cached_cifar10(download=False)
