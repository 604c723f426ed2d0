"""Where convnet keeps downloads and decoded arrays.

Layout under `cache_home()`:
    cifar-10-python.tar.gz      the CIFAR-10 download
    cache/<key>.npz             decoded image folders, one file per (folder, split, size, channels)

A cache key hashes everything the decoded arrays depend on (see `cache_key`), so a changed,
added or removed file gives a new key and the folder is decoded again; the stale entry for the
same folder and settings is then deleted. Decoding CIFAR-10's 50,000 JPEGs takes seconds;
reading them back takes a fraction.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from convnet.files import atomic_write

# Bump when the decoding or the stored layout changes, so old entries are no longer used.
FORMAT_VERSION = 1


def cache_home() -> Path:
    """`$CONVNET_HOME` if set, else `~/.cache/convnet`: downloads and decoded arrays live here."""
    env = os.environ.get("CONVNET_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "convnet"


def cache_key(kind: str, root: Path, files: Iterable[str], **params: object) -> str:
    """"<what>-<state>": hex digests of what is decoded (kind, folder, params) and of its files.

    Args:
        kind: the source kind, e.g. "image-folder".
        root: the folder the files are in; its resolved path is part of the key.
        files: every file that is read, as a path relative to `root`; each adds that path, its
            size and its modification time.
        params: the other inputs (split, requested size and channels); must be JSON-able.
    """
    root = Path(root).resolve()
    what = hashlib.sha256(json.dumps([FORMAT_VERSION, kind, str(root), params], sort_keys=True).encode())
    state = hashlib.sha256()
    for name in files:
        st = os.stat(os.path.join(root, name))
        # surrogateescape: a name that is not UTF-8 keeps its own bytes (os.fsdecode made it).
        state.update(f"\n{name}\0{st.st_size}\0{st.st_mtime_ns}".encode("utf-8", "surrogateescape"))
    return f"{what.hexdigest()[:16]}-{state.hexdigest()[:16]}"


def cache_path(key: str) -> Path:
    return cache_home() / "cache" / f"{key}.npz"


def load_arrays(key: str) -> dict[str, np.ndarray] | None:
    """The arrays stored under `key`, or None when there are none (or they cannot be read)."""
    path = cache_path(key)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except (OSError, ValueError):
        # A damaged entry is not an error for the user: the data is decoded again and rewritten.
        return None


def save_arrays(key: str, arrays: dict[str, np.ndarray]) -> None:
    """Store arrays under `key` (uncompressed: decoded images barely compress and load faster raw)."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    path = cache_path(key)
    atomic_write(path, write)
    # Entries for the same data and settings but older files will never be read again.
    what = key.split("-")[0]
    for stale in path.parent.glob(f"{what}-*.npz"):
        if stale != path:
            stale.unlink(missing_ok=True)
