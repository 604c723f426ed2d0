"""`convnet features` and `convnet cam`: what they refuse, and where they write when not told.

Feature maps and Grad-CAM need the PyTorch model (layer outputs and gradients), which an .onnx
export does not have: one sentence naming the .safetensors file, exit 2. Without --out the
pictures go beside the model (its run folder), never into whatever folder the shell is in.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from tests.refusals.conftest import assert_one_sentence

VIZ_COMMANDS = ["features", "cam"]


@pytest.fixture(scope="module")
def onnx_file(model_file, tmp_path_factory) -> Path:
    """A real ONNX export of the session's model, as `convnet export` writes it."""
    from convnet.cli import main

    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    assert main(["export", str(model_file), "--out", str(out)]) == 0
    return out


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "red square.png"
    Image.new("RGB", (16, 16), (220, 20, 20)).save(path)
    return path


@pytest.mark.parametrize("command", VIZ_COMMANDS)
def test_an_onnx_file_is_refused_naming_the_safetensors_model(command, onnx_file, image, convnet, tmp_path,
                                                              monkeypatch):
    monkeypatch.chdir(tmp_path)
    outcome = convnet(command, onnx_file, image, "--out", tmp_path / "out")
    assert outcome.status == 2
    assert_one_sentence(outcome.err, "error: ", str(onnx_file), "model.safetensors")
    assert "header" not in outcome.err  # the safetensors reader's complaint about a file it was never meant to read
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", VIZ_COMMANDS)
def test_without_out_the_pictures_go_beside_the_model_in_a_folder_per_image(command, model_file, image, convnet,
                                                                            tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(model_file.parent, run)
    shell = tmp_path / "shell"
    shell.mkdir()
    monkeypatch.chdir(shell)

    outcome = convnet(command, run / "model.safetensors", image)
    assert outcome.status == 0, outcome.err
    folder = run / command / "red square"
    printed = [Path(line) for line in outcome.out.splitlines()]
    assert printed and all(p.parent == folder and p.is_file() for p in printed)
    assert list(shell.iterdir()) == []  # nothing in the folder the command was run from

    # A run folder named instead of its model file: the same place.
    shutil.rmtree(folder)
    assert convnet(command, run, image).status == 0
    assert sorted(folder.iterdir()) == sorted(printed)
