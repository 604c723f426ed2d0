"""What the refusal catalog shares: a tiny trained model, hostile files written in real formats,
and a way to run a command that fails the test instead of hanging."""
from __future__ import annotations

import io
import os
import pickle
import signal
import socket
import struct
import tarfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convnet.cli import main

HANG_S = 20  # any one command here takes well under a second; a blocked open() would take forever
CIFAR_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
CIFAR_BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


class Hung(BaseException):
    """A command still running after its time. Not an OSError (as TimeoutError is) nor an Exception,
    so no `except OSError` or `except Exception` in the code under test can swallow it."""


@contextmanager
def no_hang(seconds: int = HANG_S):
    """Fail with Hung instead of hanging: SIGALRM interrupts a blocking open() too (PEP 475)."""

    def expire(signum, frame):
        raise Hung(f"still running after {seconds} s: convnet hung")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class Outcome:
    status: int
    out: str
    err: str


@pytest.fixture
def convnet(capsys):
    """convnet(*argv) -> Outcome: the CLI run in this process, under `no_hang`."""

    def run(*argv) -> Outcome:
        capsys.readouterr()
        with no_hang():
            status = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return Outcome(status, out, err)

    return run


def assert_one_sentence(text: str, *fragments: str) -> None:
    """One line saying what is wrong: no traceback, every fragment in it."""
    assert "Traceback" not in text
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


# --- hostile pickles --------------------------------------------------------------------------


class Payload:
    """Unpickling this runs a shell command that creates `marker`: what a hostile file does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def marker(tmp_path) -> Path:
    """Where a payload would leave its trace; each test asserts it never appears."""
    path = tmp_path / "PWNED"
    yield path
    assert not path.exists(), "a hostile pickle ran code"


# --- CIFAR-10 in its official layout ----------------------------------------------------------


def cifar_batch(n: int = 2, seed: int = 0) -> dict:
    """One batch as the release pickles it: bytes keys, (n, 3072) uint8 rows, a list of int labels."""
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"training batch",
        b"labels": [int(x) for x in rng.integers(0, 10, size=n)],
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        b"filenames": [b"x.png"] * n,
    }


def write_cifar(root: Path, replace: dict[str, bytes] | None = None) -> Path:
    """ROOT/cifar-10-batches-py with every batch, protocol 2 as Python 2 wrote them; `replace`
    maps a file name to the bytes to write instead."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    files = {name: pickle.dumps(cifar_batch(seed=i), protocol=2) for i, name in enumerate(CIFAR_BATCHES)}
    files["batches.meta"] = pickle.dumps({b"label_names": CIFAR_NAMES, b"num_cases_per_batch": 2}, protocol=2)
    files.update(replace or {})
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def as_archive(folder: Path) -> Path:
    """The batches folder packed as cifar-10-python.tar.gz beside it."""
    archive = folder.parent / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    return archive


# --- image files ------------------------------------------------------------------------------


def png_bytes(size=(8, 8), colour=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid 8x8 PNG whose header claims width x height pixels (far past Pillow's bomb limit)."""
    data = bytearray(png_bytes())
    ihdr = struct.pack(">II", width, height) + data[24:29]  # dims, then depth, colour, compression, filter, interlace
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (30, 200, 30)).save(buf, format="JPEG")
    return buf.getvalue()


def make_entry(path: Path, kind: str) -> None:
    """Create at `path` an entry convnet must refuse without hanging (see ODD_ENTRIES)."""
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        s.close()  # the socket file stays; nothing listens
    elif kind == "symlink loop":
        os.symlink(path.name, path)
    elif kind == "two-link loop":
        other = path.with_name(path.stem + "-back")  # no image suffix: only `path` is looked at
        os.symlink(other.name, path)
        os.symlink(path.name, other)
    elif kind == "dangling symlink":
        os.symlink("no-such-file.png", path)
    elif kind == "symlink to a fifo":
        target = path.with_name("pipe")
        os.mkfifo(target)
        os.symlink(target.name, path)
    elif kind == "device":
        os.symlink("/dev/zero", path)
    elif kind == "zero bytes":
        path.write_bytes(b"")
    elif kind == "truncated png":
        path.write_bytes(png_bytes((64, 64))[:60])
    elif kind == "truncated jpeg":
        path.write_bytes(jpeg_bytes()[:200])
    elif kind == "decompression bomb":
        path.write_bytes(bomb_png())
    elif kind == "not an image":
        path.write_bytes(b"#!/bin/sh\necho hello\n")
    else:
        raise ValueError(kind)


# Entries named like images that cannot be read as one; each gets a warning or an error line.
ODD_ENTRIES = [
    "fifo",
    "socket",
    "symlink loop",
    "two-link loop",
    "dangling symlink",
    "symlink to a fifo",
    "device",
    "zero bytes",
    "truncated png",
    "truncated jpeg",
    "decompression bomb",
    "not an image",
]
