"""Where convnet keeps downloads and decoded arrays.

Layout under `cache_home()`:
    cifar-10-python.tar.gz      the CIFAR-10 download
    cache/<key>.npz             decoded image folders, one file per (folder, split, size, channels)
    cache/<key>.u8, .lock       a streamed folder's raw decoded images and its writers' lock
    cache/<key>.json            which folder an entry was decoded from, and when (`entries`)

A cache key hashes everything the decoded arrays depend on (see `cache_key`), so a changed,
added or removed file gives a new key and the folder is decoded again; the stale entry for the
same folder and settings is then deleted. Decoding CIFAR-10's 50,000 JPEGs takes seconds;
reading them back takes a fraction. Nothing deletes an entry whose folder is gone: `entries`
lists them and `remove` deletes one (`convnet cache`).
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
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


def load_arrays(key: str, source: Path | None = None) -> dict[str, np.ndarray] | None:
    """The arrays stored under `key`, or None when there are none (or they cannot be read). An
    entry found without a note of its folder (made by an older convnet) gets one from `source`."""
    path = cache_path(key)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError):
        # A damaged entry is not an error for the user: the data is decoded again and rewritten.
        return None
    if source is not None and not path.with_suffix(".json").exists():
        try:
            _write_note(path, source)
        except OSError:
            pass  # a read-only cache still serves its arrays
    return arrays


def save_arrays(key: str, arrays: dict[str, np.ndarray], source: Path | None = None) -> None:
    """Store arrays under `key` (uncompressed: decoded images barely compress and load faster raw),
    with a note of the folder they were decoded from (`source`) for `entries`."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    path = cache_path(key)
    atomic_write(path, write)
    if source is not None:
        _write_note(path, source)
    # Entries for the same data and settings but older files will never be read again.
    what = key.split("-")[0]
    for stale in path.parent.glob(f"{what}-*.npz"):
        if stale != path:
            remove(stale.stem)


def _write_note(path: Path, source: Path) -> None:
    note = {"source": str(Path(source).resolve()), "noted": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    atomic_write(path.with_suffix(".json"), lambda tmp: Path(tmp).write_text(json.dumps(note)))


_SUFFIXES = (".npz", ".u8", ".json", ".lock")  # every file of one entry
_NOTE_BYTES = 65_536  # the most of a note `entries` reads: a path and a date


@dataclass(frozen=True)
class Entry:
    """One cache entry: its files' total size, the folder it came from (None: not recorded, or
    an unreadable note) and when it was last written (seconds since the epoch)."""

    key: str
    bytes: int
    source: str | None
    written: float

    @property
    def source_exists(self) -> bool | None:
        return None if self.source is None else Path(self.source).is_dir()


def entries() -> list[Entry]:
    """Every entry in the cache folder, largest first. Reading one never follows a link out of it."""
    folder = cache_home() / "cache"
    if not folder.is_dir():
        return []
    found: dict[str, list[os.stat_result]] = {}
    notes: dict[str, str | None] = {}
    for item in os.scandir(folder):
        stem, suffix = os.path.splitext(item.name)
        if suffix not in _SUFFIXES or not item.is_file(follow_symlinks=False):
            continue
        found.setdefault(stem, []).append(item.stat(follow_symlinks=False))
        if suffix == ".json":
            notes[stem] = _read_note(Path(item.path))
    out = [Entry(stem, sum(st.st_size for st in stats), notes.get(stem), max(st.st_mtime for st in stats)) for stem, stats in found.items()]
    return sorted(out, key=lambda e: -e.bytes)


def _read_note(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            note = json.loads(f.read(_NOTE_BYTES))
    except (OSError, ValueError):
        return None
    source = note.get("source") if isinstance(note, dict) else None
    return source if isinstance(source, str) and source and "\0" not in source else None


def remove(key: str) -> None:
    """Delete every file of the entry `key` (links themselves, never what they point to)."""
    folder = cache_home() / "cache"
    for suffix in _SUFFIXES:
        (folder / f"{key}{suffix}").unlink(missing_ok=True)
