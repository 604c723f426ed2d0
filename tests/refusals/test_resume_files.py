"""`train --resume RUN` where a file of the run is not a regular file: a folder, a FIFO, or a
symbolic link (reading a run folder never follows a link, out of the folder or anywhere).

Each case exits 2 with one sentence naming the file, before any training, never hangs on a FIFO,
and leaves the run folder and whatever a link points to as they were. (A resume whose
state.safetensors was a folder used to train from epoch 0 and die with IsADirectoryError; one
whose state.safetensors linked to another run's state resumed from that run.)
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.refusals.test_export_targets import snapshot
from tests.refusals.test_state_files import assert_one_sentence, half_run, run  # noqa: F401  (fixtures)


def _folder(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.mkdir()


def _fifo(path: Path) -> None:
    path.unlink(missing_ok=True)
    os.mkfifo(path)


def _link_to_a_copy_outside(path: Path) -> None:
    """The run's own file moved out of the folder and linked back: a link that, followed, reads well."""
    outside = path.parent.parent / "outside" / path.name
    outside.parent.mkdir()
    shutil.move(path, outside)
    path.symlink_to(outside)


def _dangling_link(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.symlink_to(path.parent / "nowhere")


# case -> (the file, how it is replaced, the words the refusal uses)
ODD_FILES = {
    "state.safetensors a folder": ("state.safetensors", _folder, "is a folder"),
    "state.safetensors a FIFO": ("state.safetensors", _fifo, "is a FIFO"),
    "state.safetensors a link out of the run": ("state.safetensors", _link_to_a_copy_outside, "is a symbolic link"),
    "state.safetensors a dangling link": ("state.safetensors", _dangling_link, "is a symbolic link"),
    "state.pt a FIFO": ("state.pt", _fifo, "is a FIFO"),
    "config.json a FIFO": ("config.json", _fifo, "is a FIFO"),
    "config.json a link out of the run": ("config.json", _link_to_a_copy_outside, "is a symbolic link"),
    "model.safetensors a folder": ("model.safetensors", _folder, "is a folder"),
    "history.csv a link out of the run": ("history.csv", _link_to_a_copy_outside, "is a symbolic link"),
}


@pytest.mark.parametrize("case", list(ODD_FILES))
def test_a_run_file_that_is_not_a_regular_file_is_refused_before_training(case, run, convnet):  # noqa: F811  (the fixture)
    name, make, words = ODD_FILES[case]
    make(run / name)
    before = snapshot(run.parent)
    result = convnet("train", "--resume", run, "--quiet")
    assert result.status == 2, result
    assert_one_sentence(result.err, "error: ", str(run / name), words)
    assert snapshot(run.parent) == before, "a refused resume changed the run folder or what a link points to"
