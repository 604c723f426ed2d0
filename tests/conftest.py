"""Fixtures shared across the suite: small real image folders written as PNG files, and one tiny trained model."""
from __future__ import annotations

from pathlib import Path

import pytest

from convnet.cli import main
from tests.helpers import write_colour_folder


@pytest.fixture(autouse=True, scope="session")
def _session_cache(tmp_path_factory):
    """A CONVNET_HOME for session- and module-scoped fixtures, which are set up before any test's own."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CONVNET_HOME", str(tmp_path_factory.mktemp("convnet_home_session")))
        yield


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own CONVNET_HOME, so caches never leak between tests or into ~/.cache."""
    monkeypatch.setenv("CONVNET_HOME", str(tmp_path_factory.mktemp("convnet_home")))


@pytest.fixture(scope="session")
def colour_folder(tmp_path_factory) -> Path:
    """A flat image folder: 3 classes x 40 images of 24x24 RGB."""
    return write_colour_folder(tmp_path_factory.mktemp("colours"), per_class=40)


@pytest.fixture(scope="session")
def model_file(colour_folder, tmp_path_factory) -> Path:
    """runs/colours/model.safetensors: the tutorial CNN trained one epoch on the 3-colour folder, with
    its run folder (history.csv, curves.png) beside it; a server serves it under the name "colours".
    Enough for predict, evaluate, export, features and cam; trained once per session."""
    runs = tmp_path_factory.mktemp("runs")
    argv = ["train", "--data", colour_folder, "--epochs", "1", "--batch-size", "32", "--runs-dir", runs, "--name",
            "colours", "--quiet"]
    assert main([str(a) for a in argv]) == 0
    return runs / "colours" / "model.safetensors"
