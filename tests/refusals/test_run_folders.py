"""What convnet refuses when it makes a run folder, and how: run names, taken folders, --runs-dir,
two runs racing for one name, and runs that fail their checks before training.

Each refused case exits 2 with `error: ...` (or argparse's usage error), never a traceback, and
leaves the file tree as it was: no folder made anywhere, no file of an earlier run touched.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from convnet.errors import ConfigError
from convnet.training.config import MAX_NAME_LENGTH, TrainConfig
from convnet.training.run_folder import RunFolder
from tests.helpers import write_colour_folder
from tests.refusals.conftest import assert_one_sentence
from tests.refusals.test_cli_garbage import run_cli

TINY = ["--epochs", "1", "--batch-size", "8", "--device", "cpu", "--quiet"]  # with SPEC: a run of well under a second
SPEC = ["--arch", "c4-p-f-d8"]  # left out where a case names its own model (--arch would override its --model)
RUN_FILES = {"config.json", "history.csv", "model.safetensors", "state.safetensors", "curves.png", "samples.png"}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """3 colour classes x 6 images of 8x8: the spec network above trains on it in a blink."""
    return write_colour_folder(tmp_path_factory.mktemp("tiny") / "data", per_class=6, size=8)


@pytest.fixture
def here(tmp_path, monkeypatch) -> Path:
    """tmp_path as the working folder, so a relative path that escapes would land in the tree the tests look at."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under root -> its bytes (None for folders and links): what 'nothing changed' compares."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            found[str(path.relative_to(root))] = None if path.is_dir() or path.is_symlink() else path.read_bytes()
    return found


def train(capsys, data: Path, runs: Path, *argv: str):
    model = [] if {"--model", "--arch"} & set(argv) else SPEC
    return run_cli(capsys, "train", "--data", data, "--runs-dir", runs, *TINY, *model, *argv)


# --- run names ----------------------------------------------------------------------------------

BAD_NAMES = {
    "a slash": "a/b",
    "a backslash": "a\\b",
    "dot dot": "..",
    "dot": ".",
    "climbing out": "../escaped",
    "an absolute path": "/tmp/convnet-escaped-run",
    f"{MAX_NAME_LENGTH + 1} characters": "x" * (MAX_NAME_LENGTH + 1),
    "a newline": "a\nb",
    "a tab": "a\tb",
    "a NUL": "a\0b",
    "DEL": "a\x7fb",
    "empty": "",
    "starting with -": "-rf",
}


@pytest.mark.parametrize("name", list(BAD_NAMES.values()), ids=list(BAD_NAMES))
def test_a_name_that_is_not_one_folder_is_refused(name, here, tiny_data, capsys):
    before = tree(here)
    # --name=VALUE: argparse takes "-rf" as the value
    result = train(capsys, tiny_data, here / "runs", f"--name={name}")
    assert result.status == 2, result
    assert_one_sentence(result.err, "error: ", "--name")
    assert tree(here) == before
    assert not Path("/tmp/convnet-escaped-run").exists()


def test_the_longest_allowed_name_is_taken(here, tiny_data, capsys):
    result = train(capsys, tiny_data, here / "runs", "--name", "x" * MAX_NAME_LENGTH)
    assert result.status == 0, result
    assert {p.name for p in (here / "runs" / ("x" * MAX_NAME_LENGTH)).iterdir()} == RUN_FILES


# --- the folder is taken ------------------------------------------------------------------------


def _earlier_run(runs: Path) -> None:
    (runs / "taken").mkdir(parents=True)
    (runs / "taken" / "config.json").write_text('{"epochs": 3}\n')
    (runs / "taken" / "model.safetensors").write_bytes(b"the weights of a week of training")


def _a_file(runs: Path) -> None:
    runs.mkdir()
    (runs / "taken").write_text("notes\n")


def _a_link_to_a_folder(runs: Path) -> None:
    runs.mkdir()
    (runs.parent / "elsewhere").mkdir()
    (runs / "taken").symlink_to(runs.parent / "elsewhere")


def _a_dangling_link(runs: Path) -> None:
    runs.mkdir()
    (runs / "taken").symlink_to(runs.parent / "nowhere")


TAKEN = {"an earlier run": _earlier_run, "a file": _a_file, "a link to an empty folder": _a_link_to_a_folder,
         "a dangling link": _a_dangling_link}


@pytest.mark.parametrize("case", list(TAKEN))
def test_a_taken_run_folder_is_refused_and_left_as_it_was(case, here, tiny_data, capsys):
    TAKEN[case](here / "runs")
    before = tree(here)
    result = train(capsys, tiny_data, here / "runs", "--name", "taken")
    assert result.status == 2, result
    assert_one_sentence(result.err, "error: ", "already exists")
    assert tree(here) == before


@pytest.mark.parametrize("runs, fragment", [("runs", "is a file"), ("notes.txt/runs", "--runs-dir")],
                         ids=["a file", "below a file"])
def test_a_runs_dir_that_is_or_lies_below_a_file_is_refused(runs, fragment, here, tiny_data, capsys):
    (here / runs.split("/")[0]).write_text("not a folder\n")
    before = tree(here)
    result = train(capsys, tiny_data, here / runs, "--name", "r")
    assert result.status == 2, result
    assert_one_sentence(result.err, "error: ", fragment)
    assert tree(here) == before


# --- two runs, one name ---------------------------------------------------------------------------


@pytest.mark.slow
def test_two_runs_started_together_with_one_name_one_wins(here, tiny_data):
    argv = [sys.executable, "-m", "convnet", "train", "--data", str(tiny_data), "--runs-dir", str(here / "runs"), *TINY,
            *SPEC, "--name", "same"]
    env = {**os.environ, "CONVNET_HOME": str(here / "home")}
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    assert sorted(status for status, _, _ in results) == [0, 2], results
    (_, _, loser_err), = [r for r in results if r[0] == 2]
    assert_one_sentence(loser_err, "error: ", "already exists")
    run = here / "runs" / "same"
    assert {p.name for p in run.iterdir()} == RUN_FILES  # the winner's files, none half-written (no .tmp left)
    assert TrainConfig.from_dict(json.loads((run / "config.json").read_text())).name == "same"
    assert load_file(run / "model.safetensors")


def test_a_folder_just_claimed_by_another_run_is_not_taken_over(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    RunFolder._claim(runs / "same")  # the winner's claim; its config.json's content is the next thing it writes
    with pytest.raises(ConfigError, match="already exists"):
        RunFolder.create(TrainConfig(runs_dir=str(runs), name="same"))


def test_a_folder_made_by_another_run_before_its_claim_goes_to_one_of_them(tmp_path):
    runs = tmp_path / "runs"
    (runs / "same").mkdir(parents=True)  # the other run's mkdir, its config.json not yet created
    run = RunFolder.create(TrainConfig(runs_dir=str(runs), name="same"))  # this one creates config.json first: it wins
    with pytest.raises(ConfigError, match="already exists"):
        RunFolder._claim(runs / "same")  # the other run's config.json, second
    assert TrainConfig.from_dict(json.loads(run.config_path.read_text())).name == "same"


def test_discard_keeps_an_empty_folder_the_run_found(tmp_path):
    runs = tmp_path / "runs"
    (runs / "found").mkdir(parents=True)
    RunFolder.create(TrainConfig(runs_dir=str(runs), name="found")).discard()
    RunFolder.create(TrainConfig(runs_dir=str(runs), name="made")).discard()
    assert [p.name for p in runs.iterdir()] == ["found"] and not any((runs / "found").iterdir())


# --- runs that fail their checks before training ------------------------------------------------

# case -> the flags (with the tiny run above) that must stop the run before its first step
FAILS_BEFORE_TRAINING = {
    "unknown model": ["--model", "nope"],
    "argument the model does not take": ["--model", "tutorial", "--model-arg", "foo=1"],
    "model argument that is not KEY=VALUE": ["--model-arg", "foo"],
    "model argument of the wrong type": ["--model", "resnet", "--model-arg", "depth=zz"],
    "spec that does not parse": ["--arch", "zz"],
    "spec that pools 8x8 images to nothing": ["--arch", "c4-p-p-p-p-f-d8"],
    "zero evaluation batch size": ["--eval-batch-size", "0"],
    "NaN warm-up": ["--warmup-epochs", "nan"],
    "infinite learning rate": ["--lr", "inf"],
    "negative weight decay": ["--weight-decay", "-1"],
    "validation split of 1": ["--val-split", "1"],
    "data folder that does not exist": ["--data", "no-such-folder"],
    "data that is an empty folder": ["--data", "empty"],
    "data that is a text file": ["--data", "notes.txt"],
    "scratch engine with a model it lacks": ["--engine", "scratch", "--model", "resnet"],
    "image size 0": ["--image-size", "0"],
    "channels 2": ["--channels", "2"],
    "unknown recipe": ["--recipe", "nope"],
}


@pytest.mark.parametrize("case", list(FAILS_BEFORE_TRAINING))
def test_a_run_that_fails_its_checks_leaves_no_folder(case, here, tiny_data, capsys):
    (here / "empty").mkdir()
    (here / "notes.txt").write_text("not images\n")
    before = tree(here)
    result = train(capsys, tiny_data, here / "runs", "--name", "r", *FAILS_BEFORE_TRAINING[case])
    assert result.status == 2, result
    assert "Traceback" not in result.out + result.err
    if "usage:" not in result.err:  # argparse's own refusals print the usage line first
        assert_one_sentence(result.err, "error: ")
    after = tree(here)
    assert {k: v for k, v in after.items() if k != "runs"} == before, "a failed run left files behind"
