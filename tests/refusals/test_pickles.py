"""Hostile pickles in every data file convnet reads (issue 9, part 1, data half): none runs.

Each payload's `__reduce__` runs `os.system("touch MARKER")` when unpickled; the `marker`
fixture fails the test if that file ever appears. A file convnet must read (a CIFAR-10 batch)
is then one sentence and exit status 2; a cache entry, which convnet can rebuild, is decoded
again from the source.
"""
from __future__ import annotations

import io
import pickle
import warnings
import zipfile

import numpy as np
import pytest

from convnet.data.cache import CacheWarning, cache_home
from convnet.data.sources import load_dataset
from convnet.errors import DataError
from tests.refusals.conftest import (
    CIFAR_NAMES,
    Payload,
    as_archive,
    assert_one_sentence,
    cifar_batch,
    no_hang,
    write_cifar,
)


def hostile_batches(marker) -> dict[str, dict[str, bytes]]:
    """Case -> the CIFAR-10 file to replace and its bytes."""
    evil = Payload(marker)
    batch = cifar_batch()
    return {
        "data_batch_1 is the payload": {"data_batch_1": pickle.dumps(evil, protocol=2)},
        "payload as the labels": {"data_batch_1": pickle.dumps({**batch, b"labels": evil}, protocol=2)},
        "payload inside the data dict, protocol 5": {
            "data_batch_2": pickle.dumps({**batch, b"extra": [evil]}, protocol=5)},
        "test_batch is the payload": {"test_batch": pickle.dumps(evil)},
        "batches.meta is the payload": {"batches.meta": pickle.dumps(evil, protocol=0)},
        "payload as a class name": {
            "batches.meta": pickle.dumps({b"label_names": [evil] + CIFAR_NAMES[1:]}, protocol=2)},
    }


CASES = list(hostile_batches(None))


@pytest.mark.parametrize("packed", ["folder", "archive"])
@pytest.mark.parametrize("case", CASES)
def test_a_hostile_cifar_pickle_never_runs(case, packed, marker, tmp_path, convnet):
    replace = hostile_batches(marker)[case]
    folder = write_cifar(tmp_path / "cifar", replace)
    data = folder if packed == "folder" else as_archive(folder)
    split = "test" if "test_batch" in replace else "train"
    with no_hang(), pytest.raises(DataError, match="not a CIFAR-10 pickle|is not part of a CIFAR-10 batch"):
        load_dataset(data, split)
    result = convnet("show-data", "--data", data, "--split", split, "--out", tmp_path / "grid.png")
    assert result.status == 2
    assert_one_sentence(result.err, "error: ", "download the archive again")
    assert not (tmp_path / "grid.png").exists()


def object_array_npz(marker) -> bytes:
    """An .npz whose images are a pickled object array holding the payload."""
    buf = io.BytesIO()
    np.savez(buf, images=np.array([Payload(marker)], dtype=object), labels=np.zeros(1, np.int64))
    return buf.getvalue()


def npz_member_is_a_pickle(marker) -> bytes:
    """An .npz (a zip) whose images.npy member is a bare pickle, not an .npy file."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("images.npy", pickle.dumps(Payload(marker)))
    return buf.getvalue()


CACHE_CASES = {
    "object array in the npz": object_array_npz,
    "npz member that is a pickle": npz_member_is_a_pickle,
    "whole entry is a pickle": lambda marker: pickle.dumps(Payload(marker)),
    "arrays of the wrong shape": lambda marker: _npz(images=np.zeros((2, 1, 1, 1), np.uint8)),
    "labels out of range": lambda marker: _npz(labels=np.full(120, 99, np.int64)),
    "no arrays at all": lambda marker: _npz(),
}


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


@pytest.mark.parametrize("case", list(CACHE_CASES))
def test_a_hostile_cache_entry_is_decoded_again_not_run(case, marker, colour_folder):
    first = load_dataset(colour_folder)  # decodes the folder and writes its cache entry
    (entry,) = (cache_home() / "cache").glob("*.npz")
    entry.write_bytes(CACHE_CASES[case](marker))
    with no_hang(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = load_dataset(colour_folder)
    # A damaged entry is said to be decoded again; one with no valid checksum at all is decoded again quietly.
    assert all(issubclass(w.category, CacheWarning) and "decoded again" in str(w.message) for w in caught), caught
    assert again.images.equal(first.images) and again.labels.equal(first.labels)
    with np.load(entry, allow_pickle=False) as rebuilt:  # and the entry was written anew
        assert rebuilt["images"].shape == tuple(first.images.shape)
