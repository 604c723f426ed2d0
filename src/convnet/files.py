"""Writing files so that a crash or a kill never leaves a half-written one behind, and opening
files in folders convnet owns without following a link or blocking on a FIFO."""
from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Call write(tmp_path), then rename over `path`: a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_KINDS = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a folder"),
          (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"))


def kind_of_mode(mode: int) -> str:
    """What a file of this `st_mode` is, in a few words ("a folder", "a FIFO (named pipe)", ...)."""
    return next((words for test, words in _KINDS if test(mode)), "a special file")


def kind_of(path: Path) -> str | None:
    """What is at `path` in a few words, a symbolic link as itself (not followed); None for nothing."""
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    return kind_of_mode(mode)


def open_regular(path: Path, flags: int = os.O_RDONLY) -> int:
    """A file descriptor for the regular file `path`, opened with `flags` (O_CREAT creates it).

    Never follows a link (O_NOFOLLOW) and never blocks on a FIFO (O_NONBLOCK, which a regular
    file ignores). Raises:
        OSError: `path` is missing, cannot be opened, or is not a regular file; for a link or
            anything else that is not a regular file, `strerror` says so.
    """
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
        fd = -1
    if fd >= 0 and stat.S_ISREG(os.fstat(fd).st_mode):
        return fd
    if fd >= 0:
        os.close(fd)
    raise OSError(errno.EINVAL, "a link, a FIFO or a device, not a regular file", str(path))


def size_text(n_bytes: int) -> str:
    """E.g. "245.8 MB": decimal units, as disks are sold and `df -H` shows them."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{n_bytes} bytes"
