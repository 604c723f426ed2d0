"""`convnet cache`: the decode cache's entries listed with the folders they came from, pruned and cleared.

Sizes are checked against the files on disk (os.stat), entries against the folders the tests wrote.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from convnet.cli import main
from convnet.data import cache
from convnet.data.image_folder import DataWarning, load_image_folder, scan_folder
from convnet.data.streaming import open_streamed
from tests.helpers import write_colour_folder


def _files() -> list[Path]:
    return sorted((cache.cache_home() / "cache").iterdir())


def test_an_entry_lists_its_folder_and_the_size_of_its_files(tmp_path, capsys):
    folder = write_colour_folder(tmp_path / "pics", per_class=4)
    load_image_folder(folder)
    [entry] = cache.entries()
    assert entry.source == str(folder.resolve()) and entry.source_exists
    assert entry.bytes == sum(os.stat(f).st_size for f in _files())
    assert main(["cache"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("1 entries") and str(folder.resolve()) in out and "--prune" not in out


def test_prune_deletes_the_entries_of_folders_that_are_gone_and_keeps_the_others(tmp_path, capsys):
    kept, gone = (write_colour_folder(tmp_path / "kept", per_class=4),
                  write_colour_folder(tmp_path / "gone", per_class=5))
    load_image_folder(kept)
    load_image_folder(gone)
    shutil.rmtree(gone)
    assert "--prune deletes it" in (main(["cache"]), capsys.readouterr().out)[1]
    assert main(["cache", "--prune"]) == 0
    assert capsys.readouterr().out.startswith("deleted 1 of 2 entries")
    assert [e.source for e in cache.entries()] == [str(kept.resolve())]
    assert {f.suffix for f in _files()} == {".npz", ".json"}  # the kept entry, whole
    assert len(load_image_folder(kept)) == 12


def test_a_streamed_entry_goes_whole_and_clear_empties_the_cache(tmp_path, capsys):
    folder = write_colour_folder(tmp_path / "pics", per_class=4)
    load_image_folder(folder)
    with pytest.warns(DataWarning, match="Caching 12 decoded images for streaming"):
        open_streamed(scan_folder(folder))
    assert {f.suffix for f in _files()} == {".npz", ".json", ".u8", ".lock"}
    assert len(cache.entries()) == 2
    assert main(["cache", "--clear"]) == 0
    assert _files() == []
    assert len(load_image_folder(folder)) == 12  # decoded again


def test_an_entry_from_before_notes_is_noted_when_next_read_and_pruned_if_never_read(tmp_path):
    used, unused = (write_colour_folder(tmp_path / "used", per_class=4),
                    write_colour_folder(tmp_path / "unused", per_class=4, seed=1))
    load_image_folder(used)
    load_image_folder(unused)
    for note in (cache.cache_home() / "cache").glob("*.json"):
        note.unlink()  # as an older convnet left them
    assert [e.source for e in cache.entries()] == [None, None]
    load_image_folder(used)
    assert sorted(map(str, (e.source for e in cache.entries()))) == sorted([str(used.resolve()), "None"])
    assert main(["cache", "--prune"]) == 0
    assert [e.source for e in cache.entries()] == [str(used.resolve())]


def test_hostile_cache_files_are_neither_followed_nor_trusted(tmp_path, capsys):
    folder = cache.cache_home() / "cache"
    folder.mkdir(parents=True)
    link, junk, huge = ("0000000000000000-0000000000000001", "0000000000000000-0000000000000002",
                        "0000000000000000-0000000000000003")
    outside = tmp_path / "precious.npz"
    np.savez(outside, a=np.zeros(3))
    (folder / f"{link}.npz").symlink_to(outside)  # a link out of the cache: deleted itself, never through
    (folder / f"{junk}.npz").write_bytes(b"not a zip")
    (folder / f"{junk}.json").write_text('{"source": ["not", "a", "path"]}')
    (folder / f"{huge}.json").write_text(json.dumps({"source": "x" * 100_000}))  # past what a note may hold
    (folder / "notes.txt").write_text("not a cache file")
    (folder / "junk.npz").write_bytes(b"not named like an entry")
    assert {(e.key, e.source) for e in cache.entries()} == {(link, None), (junk, None), (huge, None)}
    assert main(["cache", "--clear"]) == 0
    assert outside.exists() and (folder / "notes.txt").exists() and (folder / "junk.npz").exists()
    assert sorted(p.name for p in _files()) == ["junk.npz", "notes.txt"]


def test_every_entry_holds_the_sha256_of_its_arrays_and_raw_pixels(tmp_path):
    """The documented format, recomputed with hashlib: each array's [name, dtype, shape] as JSON, then
    its bytes, in name order; a streamed entry's index also holds the SHA-256 of its .u8 file."""
    folder = write_colour_folder(tmp_path / "pics", per_class=4)
    load_image_folder(folder)
    with pytest.warns(DataWarning):
        open_streamed(scan_folder(folder))
    streamed = 0
    for npz_path in [f for f in _files() if f.suffix == ".npz"]:
        with np.load(npz_path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        h = hashlib.sha256()
        for name in sorted(set(arrays) - {"sha256"}):
            h.update(json.dumps([name, arrays[name].dtype.str, list(arrays[name].shape)]).encode()
                     + arrays[name].tobytes())
        assert arrays["sha256"].tobytes() == h.digest()
        if "raw_sha256" in arrays:
            assert arrays["raw_sha256"].tobytes() == hashlib.sha256(npz_path.with_suffix(".u8").read_bytes()).digest()
            streamed += 1
    assert streamed == 1


def test_the_command_says_what_it_does():
    out = subprocess.run([sys.executable, "-m", "convnet", "cache", "--prune", "--clear"], capture_output=True,
                         text=True)
    assert out.returncode == 2 and "not allowed with argument" in out.stderr
    listed = subprocess.run([sys.executable, "-m", "convnet", "--help"], capture_output=True, text=True).stdout
    assert "cache" in listed
