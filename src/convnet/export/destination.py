"""Where an export may write: refusals before any work, and the file system's errors as one sentence."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from convnet.errors import ConfigError
from convnet.files import kind_of


def check_destination(path: Path, force: bool, writes: str) -> None:
    """Refuse, before the export's work, a destination that exists (without `force`), that is not
    what the export writes there (`writes`: "a regular file" or "a folder"), or that cannot be made.

    --force replaces only what an export could have written: never a FIFO, socket or device (a
    rename over /dev/null would replace the device with a file), and never a symbolic link, which
    the export does not follow: whatever it points to stays as it is.
    """
    if "\0" in str(path):
        raise ConfigError(f"The output path {str(path)!r} has a NUL character, which no file name can hold; "
                          "pass another --out.")
    kind = kind_of(path)
    if kind is not None and kind != writes:
        raise ConfigError(f"{path} is {kind}, not {writes} that --force could replace; "
                          "remove it yourself or pass another --out.")
    if kind is not None and not force:
        raise ConfigError(f"{path} already exists; pass --force to replace it, or --out to write elsewhere.")
    above = next((p for p in path.parents if p.exists()), None)  # the folder it would be made in
    if above is not None and not above.is_dir():
        raise ConfigError(f"Cannot write {path}: {above} is a file, not a folder; pass an --out elsewhere.")


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """What the file system refuses (permissions, a full disk) as one sentence."""
    try:
        yield
    except OSError as e:
        raise ConfigError(f"Cannot write {path} ({e.strerror or e}); "
                          "pass an --out in a folder you can write to.") from None


