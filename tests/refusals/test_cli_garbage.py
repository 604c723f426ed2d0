"""Every option of every command, given garbage: exit status 2, never a traceback, nothing written.

The cases are not typed by hand: the test walks `build_parser()` (each subcommand, each of its
actions), so a new option is covered the day it is added. Each option gets the generic garbage
below with every other argument valid (a real model file, image and data folder); an option that
legitimately takes one of those values (a folder named "nan", a seed of 0) says so in ACCEPTED
and gets values it must refuse instead. A flag that takes no value is given a stray argument.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convnet.cli import build_parser, main
from tests.helpers import write_colour_folder
from tests.refusals.conftest import Outcome, no_hang

GARBAGE = ("nan", "-1", "zzz", "", "3x3x3")  # not a number, negative, a word, empty, a shape where a scalar is due


@pytest.fixture(autouse=True)
def no_serving(monkeypatch):
    """`serve` with arguments it accepts returns at once (exit 0, a failure for a garbage case) instead of serving
    forever."""
    uvicorn = pytest.importorskip("uvicorn")
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: None)


def run_cli(capsys, *argv) -> Outcome:
    """The CLI in this process under `no_hang`; argparse's SystemExit becomes the exit status."""
    capsys.readouterr()
    with no_hang():
        try:
            status = main([str(a) for a in argv])
        except SystemExit as e:
            status = e.code
    out, err = capsys.readouterr()
    return Outcome(status, out, err)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """What the valid arguments point at: a tiny data folder, a model trained on it, an image, a text file."""
    root = tmp_path_factory.mktemp("garbage")
    data = write_colour_folder(root / "data", per_class=6, size=8)
    with pytest.MonkeyPatch.context() as mp:  # the suite's per-test CONVNET_HOME is not there for module fixtures
        mp.setenv("CONVNET_HOME", str(root / "home"))
        argv = ["train", "--data", data, "--arch", "c4-p-f-d8", "--epochs", "1", "--batch-size", "8", "--device", "cpu",
                "--runs-dir", root / "runs", "--name", "m", "--quiet"]
        assert main([str(a) for a in argv]) == 0
    image = root / "red.png"
    Image.fromarray(np.full((8, 8, 3), (230, 20, 20), np.uint8)).save(image)
    notes = root / "notes.txt"
    notes.write_text("not an image, not a folder\n")
    return {"data": data, "model": root / "runs" / "m" / "model.safetensors", "image": image, "notes": notes}


def valid_arguments(command: str, files: dict[str, Path], tmp: Path) -> tuple[list[str], dict[str, list[str]]]:
    """(positionals, {option: its values}) that the command accepts, each pointing into tmp or at `files`."""
    model, image, data = str(files["model"]), str(files["image"]), str(files["data"])
    return {
        # --model spec with --model-arg, not --arch: --arch would override a garbage --model
        "train": ([], {"--data": [data], "--model": ["spec"], "--model-arg": ["arch=c4-p-f-d8"], "--epochs": ["1"],
                       "--batch-size": ["8"], "--device": ["cpu"], "--runs-dir": [str(tmp / "runs")], "--name": ["g"],
                       "--quiet": []}),
        "evaluate": ([model], {"--data": [data], "--out": [str(tmp / "eval")]}),
        "predict": ([model, image], {}),
        "summary": ([], {}),
        "show-data": ([], {"--data": [data], "--out": [str(tmp / "grid.png")]}),
        "explain": ([], {}),
        "features": ([model, image], {"--out": [str(tmp / "features")]}),
        "cam": ([model, image], {"--out": [str(tmp / "cam")]}),
        # port 0: any free one; `no_serving` stops it before it serves
        "serve": ([model], {"--host": ["127.0.0.1"], "--port": ["0"]}),
        # triton: the format that reads every option
        "export": ([model], {"--format": ["triton"], "--out": [str(tmp / "triton")]}),
        "cache": ([], {}),
    }[command]


# (command, option) -> the values to try instead of GARBAGE, and why. "@notes" is a text file, "@image" an image.
ACCEPTED = {
    ("train", "--runs-dir"): (("", "@notes", "@notes/below", "a\0b"), "any folder name is a runs dir, a new one made"),
    ("train", "--name"): (("", "-1", "a/b", "..", "@abs"), "nan, zzz and 3x3x3 are plain folder names"),
    ("train", "--image-size"): (("nan", "-1", "zzz", "", "0", "3x3x3", "5000"), "3x3 would be a size"),
    ("train", "--data"): (("nan", "-1", "zzz", "", "@notes", "@image"), "paths"),
    ("evaluate", "--out"): (("@notes", "@notes/below", "a\0b"),
                            "any folder name is an output folder ('' is the default)"),
    ("features", "--out"): (("@notes", "@notes/below", "a\0b"), "any folder name is an output folder"),
    ("cam", "--out"): (("@notes", "@notes/below", "a\0b"), "any folder name is an output folder"),
    ("summary", "--input"): (("nan", "-1", "zzz", "", "3x3", "0x8x8", "3x8x8x8", "3x1x1"), "3x3x3 is a shape"),
    ("explain", "--seed"): (("nan", "zzz", "", "3x3x3"), "any integer seeds its draw, -1 and 2**64 included"),
    ("explain", "--png"): (("", "@notes/below", "a\0b"), "any other name is a file to write"),
    ("export", "--out"): (("@notes", "@notes/below", "a\0b"), "any other name is a repository folder to make"),
    ("export", "--name"): (("", "-1", "a/b", "..", "a b"), "nan, zzz and 3x3x3 are names Triton allows"),
    ("summary", "--classes"): ((*GARBAGE, "0"), "0 classes is no model either"),
    ("show-data", "--split"): ((), "a flat image folder is one split: any split name shows all of it"),
    ("show-data", "--seed"): (("nan", "-1", "zzz", "", "3x3x3", str(2**64)), "any non-negative seed"),
    ("train", "--seed"): (("nan", "-1", "zzz", "", "3x3x3", str(2**32)), "any seed below 2**32"),
}


# predict answers every image it can and prints an error line for each it cannot: exit 1 ("some failed") by design;
# 2 when there is nothing to answer at all.
STATUS = {("predict", "images"): (1, 2)}


def subcommands() -> dict[str, argparse.ArgumentParser]:
    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices


def subcommand(command: str) -> argparse.ArgumentParser:
    return subcommands()[command]


def cases() -> list:
    """One pytest.param per (command, option, garbage value), each id reading `command --option value`."""
    found = []
    for command, p in subcommands().items():
        for action in p._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            option = action.option_strings[-1] if action.option_strings else action.dest
            # --flag=zzz: a value for a flag
            values = ACCEPTED.get((command, option), (GARBAGE, ""))[0] if action.nargs != 0 else ("zzz",)
            for value in values:
                found.append(pytest.param(command, option, bool(action.option_strings), value,
                                          id=f"{command} {option} {value!r}"))
    return found


def tree(root: Path) -> set[str]:
    return {str(Path(d, n).relative_to(root)) for d, dirs, names in os.walk(root) for n in dirs + names}


def argv_for(command: str, files, tmp: Path, option: str | None = None, is_option: bool = True,
             value: str = "") -> list[str]:
    """The valid arguments, `option` (if any) set to `value`: options as --opt=VALUE, so "-1" is a value, and a flag
    gets --flag=VALUE."""
    for name, path in {"@notes": files["notes"], "@image": files["image"], "@abs": tmp / "abs"}.items():
        value = value.replace(name, str(path))
    positionals, options = valid_arguments(command, files, tmp)
    if option is None:
        pass
    elif is_option:
        options = {**options, option: [value]}
    else:
        names = [a.dest for a in subcommand(command)._actions if not a.option_strings]
        positionals = [value if name == option else given
                       for name, given in zip(names[:len(positionals)], positionals, strict=True)]
    flags = [f"{k}={v}" for k, vs in options.items() for v in vs] + [k for k, vs in options.items() if not vs]
    # after "--" a positional "-1" is not taken for an option
    return [command, *flags, *(["--", *positionals] if positionals else [])]


@pytest.mark.parametrize(("command", "option", "is_option", "value"), cases())
def test_garbage_for_any_option_is_exit_2_without_a_traceback(command, option, is_option, value, files, tmp_path,
                                                              monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # a relative path that slips through lands where the test looks
    argv = argv_for(command, files, tmp_path, option, is_option, value)
    result = run_cli(capsys, *argv)
    assert result.status in STATUS.get((command, option), (2,)), (argv, result)
    assert "Traceback" not in result.out + result.err
    assert result.err.strip(), "refused without saying why"
    left = tree(tmp_path) - {"runs"}
    assert not left, f"{argv} wrote {sorted(left)}"


@pytest.mark.parametrize("command", list(subcommands()))
def test_the_valid_arguments_alone_are_accepted(command, files, tmp_path, monkeypatch, capsys):
    """Without this, a garbage case could pass because the arguments around it were already wrong."""
    monkeypatch.chdir(tmp_path)
    result = run_cli(capsys, *argv_for(command, files, tmp_path))
    assert result.status == 0, result
