"""What a torchrun launch refuses, said once by rank 0: processes that see different data (as
folders of one name that differ between machines do), and a resume on a number of processes that
cannot share the run's batch. Each launch is real: torchrun, gloo on this CPU.

Each case ends the launch with one line `error: ...` in all the ranks' output (rank 0's), no
traceback from convnet's own code (torchrun's report of a failed worker is its own), and no run
folder left behind.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import convnet
from convnet.training.config import TrainConfig
from convnet.training.run_folder import RunFolder
from tests.helpers import write_colour_folder

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
TINY = ["--arch", "c4-p-f-d8", "--epochs", "1", "--batch-size", "8", "--device", "cpu", "--quiet"]
# Rank N reads the data folder named with N in place of {RANK}: one path, other files on each "machine".
PER_RANK = ("import os, sys\nfrom convnet.cli import main\n"
            "sys.exit(main([a.replace('{RANK}', os.environ['RANK']) for a in sys.argv[1:]]))\n")


def launch(n: int, program: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CONVNET_HOME": str(tmp_path / "home")}
    return subprocess.run([*TORCHRUN, f"--nproc_per_node={n}", *program], capture_output=True, text=True, env=env,
                          timeout=240)


def assert_said_once(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """The launch failed with exactly one `error:` line, holding every fragment, and no frame of convnet's code."""
    assert result.returncode != 0, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    package = str(Path(convnet.__file__).parent)
    assert not [line for line in result.stderr.splitlines()
                if line.strip().startswith('File "') and package in line], result.stderr[-3000:]
    return errors[0]


def _fewer_images(root: Path) -> None:
    (root / "red" / "000.png").unlink()


def _an_extra_class(root: Path) -> None:
    shutil.copytree(root / "red", root / "yellow")


# case -> (how rank 1's copy of the data differs, what the sentence names)
DIFFERENT_DATA = {"fewer images": (_fewer_images, "images: "), "an extra class": (_an_extra_class, "classes")}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(DIFFERENT_DATA))
def test_ranks_that_see_different_data_stop_with_one_sentence(case, tmp_path):
    differ, words = DIFFERENT_DATA[case]
    for rank in (0, 1):
        write_colour_folder(tmp_path / f"data{rank}", per_class=6, size=8)
    differ(tmp_path / "data1")
    (tmp_path / "per_rank.py").write_text(PER_RANK)
    runs = tmp_path / "runs"
    result = launch(2, [str(tmp_path / "per_rank.py"), "train", "--data", str(tmp_path / "data{RANK}"),
                        "--runs-dir", str(runs), "--name", "r", *TINY], tmp_path)
    assert_said_once(result, "rank 1", words, str(tmp_path / "data0"), "same files on every machine")
    assert not runs.exists() or not any(runs.iterdir())


@pytest.mark.slow
def test_a_resume_on_processes_that_cannot_share_its_batch_says_so_once_with_advice_resume_can_follow(tmp_path):
    data = write_colour_folder(tmp_path / "data", per_class=6, size=8)
    run = RunFolder.create(TrainConfig(data=str(data), model="spec", model_args={"arch": "c4-p-f-d8"}, batch_size=32,
                                       epochs=2, runs_dir=str(tmp_path / "runs"), name="b32", device="cpu"))
    before = run.config_path.read_bytes()
    result = launch(3, ["-m", "convnet", "train", "--resume", str(run.path), "--quiet"], tmp_path)
    sentence = assert_said_once(result, "32", "3 processes", "2 or 4")
    assert "--batch-size" not in sentence  # --resume ignores every other flag: advice to pass one could not be followed
    assert run.config_path.read_bytes() == before and json.loads(before)["batch_size"] == 32
    assert sorted(p.name for p in run.path.iterdir()) == ["config.json"]
