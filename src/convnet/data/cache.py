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

The cache folder is convnet's own, but anyone could have written in it, so nothing there is
trusted. Only files named `<key><suffix>` (`_KEY`, `_SUFFIXES`) are entries, the only files
`remove` deletes; the folder itself must not be a link (`cache_folder`), and no file in it is
opened through a link or blocks on a FIFO (`files.open_regular`). Each `.npz` holds the SHA-256
of its arrays (`CHECKSUM`; a streamed entry's also covers its `.u8` through `file_checksum`): an
entry that is damaged (truncated, a bad CRC, a header larger than the file), altered, or from
before checksums is read as absent, so its folder is decoded again and the entry replaced.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
import warnings
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from convnet.errors import ConfigError
from convnet.files import atomic_write, open_regular

# Bump when the decoding or the stored layout changes, so old entries are no longer used.
FORMAT_VERSION = 1
CHECKSUM = "sha256"  # the array in every .npz entry holding the SHA-256 of the others (`checksum`)
_KEY = re.compile(r"[0-9a-f]{16}-[0-9a-f]{16}")  # what `cache_key` makes: the only names `remove` deletes
_CHUNK = 1 << 20  # bytes read at a time when checksumming a file


class CacheWarning(UserWarning):
    """A cache entry that could not be used as it is: its folder is decoded again."""


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


def cache_folder() -> Path:
    """`cache_home()/cache`, where the entries are.

    Raises:
        ConfigError: the folder is a symbolic link: its entries would be read, written and deleted
            wherever it points.
    """
    folder = cache_home() / "cache"
    if folder.is_symlink():
        raise ConfigError(
            f"The decode cache folder {folder} is a symbolic link, which convnet does not follow; "
            "remove the link, or set CONVNET_HOME to a folder on the disk it points to."
        )
    return folder


def cache_path(key: str) -> Path:
    return cache_folder() / f"{key}.npz"


def checksum(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """(32,) uint8: the SHA-256 of every array's name, dtype, shape and bytes."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(json.dumps([name, a.dtype.str, a.shape]).encode())
        h.update(a)
    return np.frombuffer(h.digest(), dtype=np.uint8)


def file_checksum(path: Path, size: int) -> np.ndarray:
    """(32,) uint8: the SHA-256 of the regular file `path` (never read through a link).

    Raises:
        OSError: the file cannot be opened, is not a regular file, or does not hold `size` bytes.
    """
    fd = open_regular(path)
    try:
        held = os.fstat(fd).st_size
        if held != size:
            raise OSError(f"{held} bytes where {size} were written")
        h, buf = hashlib.sha256(), bytearray(_CHUNK)
        while n := os.readv(fd, [buf]):
            h.update(memoryview(buf)[:n])
    finally:
        os.close(fd)
    return np.frombuffer(h.digest(), dtype=np.uint8)


def warn_damaged(path: Path, why: str | Exception) -> None:
    """One `CacheWarning`: the entry at `path` is not used, for the reason `why`."""
    if isinstance(why, Exception):
        why = (why.strerror if isinstance(why, OSError) else None) or str(why) or type(why).__name__
    warnings.warn(
        f"The decode cache entry {path} is damaged or altered ({why}); "
        "its folder is decoded again and the entry replaced.",
        CacheWarning,
        stacklevel=3,
    )


def load_arrays(key: str, source: Path | None = None, warn: bool = True) -> dict[str, np.ndarray] | None:
    """The arrays stored under `key`, or None when there are none or they fail their checksum.

    A damaged or altered entry is not an error for the user: with `warn`, one `CacheWarning`
    says so, and the caller decodes the data again and replaces it. An entry from before
    checksums is decoded again quietly. An entry found without a note of its folder (made by an
    older convnet) gets one from `source`.
    """
    path = cache_path(key)
    try:
        arrays = _read_npz(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except Exception as e:  # zipfile and NumPy's header parser raise many undocumented kinds on garbage
        if warn:
            warn_damaged(path, e)
        return None
    stored = arrays.pop(CHECKSUM, None)
    if stored is None:
        return None  # written before checksums
    if not np.array_equal(stored, checksum(arrays)):
        if warn:
            warn_damaged(path, "its arrays do not match their checksum")
        return None
    if source is not None and not _is_regular(path.with_suffix(".json")):
        try:
            _write_note(path, source)
        except OSError:
            pass  # a read-only cache still serves its arrays
    return arrays


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of the .npz `path`, each checked against the file's size before it is allocated."""
    with os.fdopen(open_regular(path), "rb") as f, zipfile.ZipFile(f) as npz:
        size = os.fstat(f.fileno()).st_size
        return {info.filename.removesuffix(".npy"): _read_member(npz, info, size) for info in npz.infolist()}


def _read_member(npz: zipfile.ZipFile, info: zipfile.ZipInfo, file_size: int) -> np.ndarray:
    """One stored .npy member: its header must account for exactly the member's bytes, so a header
    claiming a shape of 10**12 is refused before anything is allocated."""
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1 or info.file_size > file_size:
        raise ValueError(f"{info.filename} is compressed, encrypted or larger than the file")
    with npz.open(info) as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        n_bytes = math.prod(shape) * dtype.itemsize
        if dtype.hasobject:
            raise ValueError(f"{info.filename} holds Python objects")
        if f.tell() + n_bytes != info.file_size:
            raise ValueError(f"{info.filename}'s header does not match its size")
        data = np.empty(n_bytes, dtype=np.uint8)
        view, done = memoryview(data), 0
        while done < n_bytes and (n := f.readinto(view[done : done + _CHUNK])):
            done += n
        if done != n_bytes or f.read(1):  # reading to the end checks the member's CRC
            raise ValueError(f"{info.filename} is shorter than its header says")
    return data.view(dtype).reshape(shape, order="F" if fortran else "C")


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def save_arrays(key: str, arrays: dict[str, np.ndarray], source: Path | None = None) -> None:
    """Store arrays under `key` with their `checksum` (uncompressed: decoded images barely compress
    and load faster raw), and a note of the folder they were decoded from (`source`) for `entries`.
    The file is replaced atomically, so a link or anything else in its place is replaced, never followed."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays, **{CHECKSUM: checksum(arrays)})

    path = cache_path(key)
    atomic_write(path, write)
    if source is not None:
        _write_note(path, source)
    # Entries for the same data and settings but older files will never be read again.
    for stale in stale_keys(key, ".npz"):
        remove(stale)


def stale_keys(key: str, suffix: str) -> list[str]:
    """Keys of the other `suffix` files for the same data and settings as `key`, made from older files."""
    what = key.split("-")[0]
    names = (p.name.removesuffix(suffix) for p in cache_folder().glob(f"{what}-*{suffix}"))
    return [k for k in names if k != key and _KEY.fullmatch(k)]


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
    """Every entry in the cache folder, largest first: the files named `<key><suffix>` that are not
    folders (a link counts by its own size). Reading one never follows a link out of it."""
    folder = cache_folder()
    if not folder.is_dir():
        return []
    found: dict[str, list[os.stat_result]] = {}
    notes: dict[str, str | None] = {}
    for item in os.scandir(folder):
        stem, suffix = os.path.splitext(item.name)
        if suffix not in _SUFFIXES or not _KEY.fullmatch(stem) or item.is_dir(follow_symlinks=False):
            continue
        found.setdefault(stem, []).append(item.stat(follow_symlinks=False))
        if suffix == ".json":
            notes[stem] = _read_note(Path(item.path))
    out = [Entry(stem, sum(st.st_size for st in stats), notes.get(stem), max(st.st_mtime for st in stats))
           for stem, stats in found.items()]
    return sorted(out, key=lambda e: -e.bytes)


def _read_note(path: Path) -> str | None:
    try:
        with os.fdopen(open_regular(path), "rb") as f:
            note = json.loads(f.read(_NOTE_BYTES))
    except (OSError, ValueError):
        return None
    source = note.get("source") if isinstance(note, dict) else None
    return source if isinstance(source, str) and source and "\0" not in source else None


def remove(key: str) -> None:
    """Delete every file of the entry `key` (links themselves, never what they point to; never a folder)."""
    if not _KEY.fullmatch(key):
        raise ValueError(f"{key!r} is not a cache key")
    folder = cache_folder()
    for suffix in _SUFFIXES:
        path = folder / f"{key}{suffix}"
        try:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                path.unlink()
        except FileNotFoundError:
            pass
