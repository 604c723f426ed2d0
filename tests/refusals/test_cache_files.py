"""The decode cache as a careless or hostile user could leave it (issue 21, probe item 5).

The cache home is convnet's own: it deletes there only files named like its entries, never
follows a link there, never blocks on a FIFO there, and trusts no entry it cannot verify. A
damaged or altered entry is not an error for the user: it is decoded again from its folder
(one warning) and replaced. The reference for every pixel is the folder decoded into memory
under another cache home, before anything was tampered with.
"""
from __future__ import annotations

import io
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from convnet.data.cache import cache_home
from convnet.data.image_folder import load_image_folder, scan_folder
from convnet.data.streaming import open_streamed
from convnet.errors import ConvnetError
from tests.refusals.conftest import assert_one_sentence, no_hang

pytestmark = [pytest.mark.filterwarnings("ignore::convnet.data.image_folder.DataWarning"),
              pytest.mark.filterwarnings("ignore::convnet.data.cache.CacheWarning")]

KEY = "0123456789abcdef-fedcba9876543210"  # shaped like a cache key, made by no folder


@pytest.fixture(scope="module")
def reference(colour_folder) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, labels) of the colour folder, decoded under the session's cache home, not the test's."""
    found = load_image_folder(colour_folder)
    return found.images, found.labels


def _cache() -> Path:
    return cache_home() / "cache"


def _read(kind: str, folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The folder as training would read it: held in memory, or streamed from the decode cache."""
    if kind == "memory":
        found = load_image_folder(folder)
        return found.images, found.labels
    split = open_streamed(scan_folder(folder))
    return split.read(torch.arange(len(split))), split.labels


def _read_warned(kind: str, folder: Path) -> tuple[tuple[torch.Tensor, torch.Tensor], list[str]]:
    """`_read`, and the warnings it gave that say a cache entry was damaged."""
    with warnings.catch_warnings(record=True) as caught, no_hang(10):
        warnings.simplefilter("always")
        got = _read(kind, folder)
    return got, [str(w.message) for w in caught if "damaged" in str(w.message)]


def _entry(suffix: str) -> Path:
    (path,) = _cache().glob(f"*{suffix}")
    return path


# --- deleting: only files named like entries ------------------------------------------------

NOT_ENTRIES = ["notes.json", "data.npz", "x.lock", "x.u8"]


@pytest.mark.parametrize("name", NOT_ENTRIES)
@pytest.mark.parametrize("command", ["--prune", "--clear"])
def test_prune_and_clear_delete_only_files_named_like_entries(name, command, convnet, colour_folder, tmp_path):
    load_image_folder(colour_folder)  # one real entry beside the user's file
    (_cache() / name).write_bytes(b"the user's own file")
    (gone := tmp_path / "gone").mkdir()
    for suffix in (".npz", ".json"):  # an entry of a folder that no longer exists: what --prune is for
        (_cache() / f"{KEY}{suffix}").write_bytes(b"x")
    (_cache() / f"{KEY}.json").write_text(f'{{"source": "{gone / "missing"}"}}')
    listed = convnet("cache")
    assert listed.status == 0 and listed.out.startswith("2 entries"), listed.out
    outcome = convnet("cache", command)
    assert (outcome.status == 0
            and outcome.out.startswith(f"deleted {1 if command == '--prune' else 2} of 2 entries")), outcome.out
    assert (_cache() / name).read_bytes() == b"the user's own file"
    assert not (_cache() / f"{KEY}.npz").exists()


@pytest.fixture
def linked_cache(tmp_path) -> Path:
    """A cache folder that is a link to a folder of the user's, holding files with entries' names."""
    user = tmp_path / "user"
    user.mkdir()
    for name in ("notes.json", "data.npz", f"{KEY}.npz", f"{KEY}.json"):
        (user / name).write_bytes(b"the user's own file")
    _cache().parent.mkdir(parents=True, exist_ok=True)
    _cache().symlink_to(user, target_is_directory=True)
    return user


@pytest.mark.parametrize("command", [[], ["--prune"], ["--clear"]])
def test_a_cache_folder_that_is_a_link_is_refused_and_nothing_behind_it_is_deleted(command, linked_cache, convnet):
    outcome = convnet("cache", *command)
    assert outcome.status == 2
    assert_one_sentence(outcome.err, str(_cache()), "link")
    assert sorted(p.name for p in linked_cache.iterdir()) == sorted(["notes.json", "data.npz", f"{KEY}.npz",
                                                                     f"{KEY}.json"])
    assert all(p.read_bytes() == b"the user's own file" for p in linked_cache.iterdir())


@pytest.mark.parametrize("kind", ["memory", "stream"])
def test_decoding_writes_nothing_through_a_linked_cache_folder(kind, linked_cache, colour_folder):
    with pytest.raises(ConvnetError) as refused:
        _read(kind, colour_folder)
    assert_one_sentence(str(refused.value), str(_cache()), "link")
    assert len(list(linked_cache.iterdir())) == 4


# --- the streaming lock: never followed, never blocked on --------------------------------------


def _streamed_entry_without_data(folder: Path) -> Path:
    """Stream the folder once, then delete its entry's data: the next run decodes again, under the
    lock whose path this returns (removed too, for the test to put something else there)."""
    open_streamed(scan_folder(folder))
    lock = _entry(".lock")
    for suffix in (".npz", ".u8", ".lock"):
        lock.with_suffix(suffix).unlink()
    return lock


@pytest.mark.parametrize("what", ["link to a file outside", "fifo", "link to a fifo outside"])
def test_a_lock_that_is_not_a_regular_file_is_neither_followed_nor_blocked_on(what, colour_folder, reference, tmp_path):
    lock = _streamed_entry_without_data(colour_folder)
    outside = tmp_path / "precious.txt"
    if what == "fifo":
        os.mkfifo(lock)
    elif what == "link to a fifo outside":
        os.mkfifo(outside)
        lock.symlink_to(outside)
    else:
        outside.write_text("the user's own file")
        lock.symlink_to(outside)
    with no_hang(10):
        images, labels = _read("stream", colour_folder)
    assert torch.equal(images, reference[0]) and torch.equal(labels, reference[1])
    if what == "link to a file outside":
        assert outside.read_text() == "the user's own file"


# --- damaged entries: decoded again, with one warning, and replaced ----------------------------


def _rewrite_member(npz: bytes, member: str, header: dict) -> bytes:
    """The archive with `member`'s .npy header replaced by `header`, its data and CRC left valid."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(npz)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == member:
                body = io.BytesIO(data)
                version = np.lib.format.read_magic(body)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                read_header(body)
                head = io.BytesIO()
                np.lib.format.write_array_header_1_0(head, header)
                data = head.getvalue() + data[body.tell():]
            dst.writestr(info.filename, data)
    return out.getvalue()


def _flip_a_bit(data: bytes) -> bytes:
    middle = len(data) // 2  # inside the largest array
    return data[:middle] + bytes([data[middle] ^ 0x10]) + data[middle + 1 :]


DAMAGE = {
    "truncated": lambda data, big: data[: len(data) // 2],
    "bit flipped (bad CRC)": lambda data, big: _flip_a_bit(data),
    "header of shape 10**12": lambda data, big: _rewrite_member(data, big, {"descr": "|u1", "fortran_order": False,
                                                                            "shape": (10**12,)}),
    "empty": lambda data, big: b"",
}


@pytest.mark.parametrize("damage", list(DAMAGE))
@pytest.mark.parametrize("kind", ["memory", "stream"])
def test_a_damaged_entry_is_decoded_again_with_one_warning_and_replaced(kind, damage, colour_folder, reference):
    _read(kind, colour_folder)
    entry = _entry(".npz")
    big = "images.npy" if kind == "memory" else "labels.npy"
    damaged = DAMAGE[damage](entry.read_bytes(), big)
    entry.write_bytes(damaged)
    (images, labels), warned = _read_warned(kind, colour_folder)
    assert torch.equal(images, reference[0]) and torch.equal(labels, reference[1])
    assert len(warned) == 1 and str(entry) in warned[0], warned
    assert entry.read_bytes() != damaged
    _, warned = _read_warned(kind, colour_folder)
    assert warned == []  # replaced: the next run reads it quietly


def _altered_npz(entry: Path, change) -> None:
    """Rewrite the entry as a valid archive (every CRC right) whose arrays `change` has altered."""
    with np.load(entry, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    change(arrays)
    with open(entry, "wb") as f:
        np.savez(f, **arrays)


def _shift_labels(arrays):
    arrays["labels"] = (arrays["labels"] + 1) % 3


def _brighten(arrays):
    arrays["images"][0, 0, 0, 0] ^= 0xFF


def _drop_all_but_the_data(arrays):
    """The arrays as a convnet from before checksums wrote them, with one pixel changed."""
    for name in [n for n in arrays if n not in ("images", "labels", "classes", "skipped")]:
        del arrays[name]
    _brighten(arrays)


def _change_u8_in_place(entry: Path, tmp_path: Path) -> None:
    with open(entry.with_suffix(".u8"), "r+b") as f:
        f.seek(100)
        first = f.read(1)
        f.seek(100)
        f.write(bytes([first[0] ^ 0xFF]))


def _foreign_u8(entry: Path, tmp_path: Path) -> None:
    raw = entry.with_suffix(".u8")
    raw.write_bytes(np.random.default_rng(1).integers(0, 256, raw.stat().st_size, dtype=np.uint8).tobytes())


def _linked_u8(entry: Path, tmp_path: Path) -> None:
    raw = entry.with_suffix(".u8")
    outside = tmp_path / "outside.u8"
    outside.write_bytes(bytes(255 - b for b in raw.read_bytes()))
    raw.unlink()
    raw.symlink_to(outside)


def _linked_npz(entry: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.npz"
    outside.write_bytes(entry.read_bytes())
    _altered_npz(outside, _shift_labels)
    entry.unlink()
    entry.symlink_to(outside)


ALTERED = {
    ("memory", "pixels changed in place"): lambda entry, tmp: _altered_npz(entry, _brighten),
    ("memory", "labels changed in place"): lambda entry, tmp: _altered_npz(entry, _shift_labels),
    ("memory", "an entry from before checksums"): lambda entry, tmp: _altered_npz(entry, _drop_all_but_the_data),
    ("memory", "a link to an entry outside"): _linked_npz,
    ("stream", "labels changed in place"): lambda entry, tmp: _altered_npz(entry, _shift_labels),
    ("stream", "pixels changed in place"): _change_u8_in_place,
    ("stream", "a foreign .u8 of the same size"): _foreign_u8,
    ("stream", "a link to a .u8 outside"): _linked_u8,
    ("stream", "a link to an index outside"): _linked_npz,
}


@pytest.mark.parametrize(("kind", "change"), list(ALTERED))
def test_an_altered_entry_is_never_trained_on(kind, change, colour_folder, reference, tmp_path):
    _read(kind, colour_folder)
    entry = _entry(".npz")
    ALTERED[kind, change](entry, tmp_path)
    outside = {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    with no_hang(10):
        images, labels = _read(kind, colour_folder)
    assert torch.equal(images, reference[0]) and torch.equal(labels, reference[1])
    assert {p: p.read_bytes() for p in outside} == outside  # what a link pointed to is left as it was
    assert not any(p.is_symlink() for p in _cache().iterdir())  # links replaced by the entry written anew
