"""Distributed training with torchrun: real gloo process groups on this CPU, compared with one process."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import convnet
from convnet.errors import ConfigError
from convnet.training.config import TrainConfig
from convnet.training.distributed import Group, join, shard
from tests.helpers import write_colour_folder

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
# A BatchNorm network, plain SGD and fp32: the run that should match one process step for step.
# (With Adam, the conv biases in front of BatchNorm get gradients that are rounding noise, which
# Adam scales up to full steps; they change no training output but make weights incomparable.)
ARGS = ["--arch", "c8-b-p-c16-b-g", "--optimizer", "sgd", "--lr", "0.05", "--precision", "fp32",
        "--batch-size", "16", "--val-split", "0.2", "--quiet"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    # 3 classes x 30 images: 72 train images, so the last batch of each epoch (8) is uneven.
    return write_colour_folder(tmp_path_factory.mktemp("ddp") / "data", per_class=30, size=16)


def _train(n: int, data: Path, runs: Path, name: str, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    launcher = [*TORCHRUN, f"--nproc_per_node={n}", "-m", "convnet"] if n > 1 else [sys.executable, "-m", "convnet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([*launcher, "train", "--data", str(data), "--runs-dir", str(runs), "--name", name, *ARGS,
                             *extra], capture_output=True, text=True, env=env, timeout=300)
    assert not check or result.returncode == 0, result.stderr[-3000:]  # torchrun's and the ranks' own words
    return result


def _kill_everything_running(marker: str) -> None:
    """SIGKILL every process whose command line mentions `marker` (a test's own tmp path)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker in (proc / "cmdline").read_bytes().decode(errors="replace"):
                os.kill(int(proc.name), signal.SIGKILL)
        except OSError:
            pass


def _history(run: Path) -> list[dict]:
    return list(csv.DictReader((run / "history.csv").read_text().splitlines()))


@pytest.mark.slow
def test_two_processes_train_like_one_with_sync_bn(data, tmp_path):
    runs = tmp_path / "runs"
    _train(1, data, runs, "one", "--epochs", "3")
    two = _train(2, data, runs, "two", "--epochs", "3", "--sync-bn")
    assert sorted(p.name for p in runs.iterdir()) == ["one", "two"], "rank 1 must not write a run folder of its own"
    assert two.stdout.count("done:") == 1, "only rank 0 reports"
    one_rows, two_rows = _history(runs / "one"), _history(runs / "two")
    assert len(one_rows) == len(two_rows) == 3
    # The same global batches and augmentation, gradients averaged over the ranks and BatchNorm over
    # the global batch: the two runs differ only by the order of floating-point sums (a slice per
    # rank, then an all-reduce), which over 15 SGD steps stays far below 1e-4 of the loss.
    for a, b in zip(one_rows, two_rows, strict=True):
        for key in ("train_loss", "val_loss"):
            assert float(b[key]) == pytest.approx(float(a[key]), rel=1e-4), (key, a, b)
        assert a["train_acc"] == b["train_acc"] and a["val_acc"] == b["val_acc"]
    one, two_w = load_file(runs / "one" / "model.safetensors"), load_file(runs / "two" / "model.safetensors")
    assert one.keys() == two_w.keys()  # the unwrapped model: no DDP "module." prefix
    for k in one:
        assert torch.allclose(one[k].double(), two_w[k].double(), atol=1e-4), k


@pytest.mark.slow
def test_killed_distributed_run_resumes_to_the_same_weights(data, tmp_path):
    runs = tmp_path / "runs"
    epochs = ["--epochs", "4"]
    _train(2, data, runs, "whole", *epochs, "--sync-bn")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [*TORCHRUN, "--nproc_per_node=2", "-m", "convnet", "train", "--data", str(data), "--runs-dir", str(runs),
           "--name", "killed", *ARGS, *epochs, "--sync-bn"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    history = runs / "killed" / "history.csv"
    deadline = time.time() + 240
    while time.time() < deadline and not (history.exists() and len(history.read_text().splitlines()) >= 2):
        time.sleep(0.02)
    _kill_everything_running(str(runs))  # torchrun and both ranks (torchrun starts them in their own sessions)
    proc.wait()
    done = len(_history(runs / "killed"))
    assert 1 <= done < 4, "the kill must land mid-run for this test to mean anything"

    resumed = subprocess.run([*TORCHRUN, "--nproc_per_node=2", "-m", "convnet", "train", "--resume",
                              str(runs / "killed"), "--quiet"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, [line for line in resumed.stderr.splitlines() if "error" in line.lower()][:5]
    whole, killed = load_file(runs / "whole" / "model.safetensors"), load_file(runs / "killed" / "model.safetensors")
    for k in whole:
        assert torch.equal(whole[k], killed[k]), k
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in rows]  # noqa: E731
    assert strip(_history(runs / "whole")) == strip(_history(runs / "killed"))


@pytest.mark.slow
def test_a_distributed_run_resumes_on_another_number_of_processes(data, tmp_path):
    runs = tmp_path / "runs"
    _train(2, data, runs, "r", "--epochs", "1", "--sync-bn")
    config = runs / "r" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "epochs": 2}))
    done = subprocess.run([sys.executable, "-m", "convnet", "train", "--resume", str(runs / "r"), "--quiet"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [r["epoch"] for r in _history(runs / "r")] == ["1", "2"]


@pytest.mark.parametrize("env, config, fragment", [
    ({"WORLD_SIZE": "2", "RANK": "0"}, dict(batch_size=15), "multiple of 2"),
    ({"WORLD_SIZE": "2", "RANK": "0"}, dict(dist_backend="nccl"), "nccl needs CUDA"),
    ({"WORLD_SIZE": "2", "RANK": "0"}, dict(engine="scratch"), "torch engine"),
    ({"WORLD_SIZE": "two"}, {}, "WORLD_SIZE"),
    ({"WORLD_SIZE": "2", "RANK": "x"}, {}, "RANK"),
], ids=["batch not divisible", "nccl without cuda", "scratch engine", "bad WORLD_SIZE", "bad RANK"])
def test_an_inconsistent_launch_is_one_sentence_before_any_work(env, config, fragment, monkeypatch):
    if "nccl" in config.get("dist_backend", "") and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError, match=fragment) as caught:
        join(TrainConfig(batch_size=config.pop("batch_size", 16), **config))
    assert "\n" not in str(caught.value)


@pytest.mark.slow
def test_a_refused_launch_exits_2_on_every_rank_and_writes_nothing(data, tmp_path):
    # Each rank is started with the environment torchrun gives it, but by the test: torchrun ends the
    # other ranks as soon as one exits, so under it a slower rank may never get to say anything.
    runs = tmp_path / "runs"
    argv = [sys.executable, "-m", "convnet", "train", "--data", str(data), "--runs-dir", str(runs), "--name", "odd",
            *ARGS, "--epochs", "1", "--batch-size", "15"]
    ranks = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1", "WORLD_SIZE": "2", "RANK": str(rank),
                                   "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                                   "MASTER_PORT": "1"})  # port 1: no rank may get as far as connecting
             for rank in range(2)]
    outcomes = [(rank.wait(timeout=120), rank.stderr.read()) for rank in ranks]
    sentence = "error: --batch-size 15 cannot be shared by 2 processes"
    assert [status for status, _ in outcomes] == [2, 2], outcomes
    assert outcomes[0][1].count(sentence) == 1, outcomes  # rank 0 says it; another rank may say it too, or nothing
    assert all("Traceback" not in err and err.count("error:") <= 1 for _, err in outcomes), outcomes
    assert not runs.exists() or not any(runs.iterdir())


@pytest.mark.slow
def test_a_refused_launch_under_torchrun_ends_with_the_sentence_and_no_traceback_from_convnet(data, tmp_path):
    runs = tmp_path / "runs"
    result = _train(2, data, runs, "odd", "--epochs", "1", "--batch-size", "15", check=False)
    assert result.returncode != 0
    assert "error: --batch-size 15 cannot be shared by 2 processes" in result.stderr
    # torchrun reports failed workers with a traceback of its own; none may come from convnet's package.
    package = str(Path(convnet.__file__).parent)
    frames = [line for line in result.stderr.splitlines() if line.strip().startswith('File "')]
    assert not [f for f in frames if package in f], frames
    assert not runs.exists() or not any(runs.iterdir())


@pytest.mark.parametrize("n, world", [(16, 2), (8, 3), (1, 2), (0, 2), (7, 4)])
def test_shards_cover_every_item_once_and_differ_by_at_most_one(n, world):
    parts = [shard(Group(rank, world), n) for rank in range(world)]
    assert [i for p in parts for i in range(n)[p]] == list(range(n))
    sizes = [p.stop - p.start for p in parts]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.slow
def test_every_rank_stops_together_when_the_loss_diverges(data, tmp_path):
    runs = tmp_path / "runs"
    result = _train(2, data, runs, "nan", "--epochs", "2", "--lr", "1e30", check=False)
    assert result.returncode != 0
    assert result.stderr.count("error: The loss became") == 2, result.stderr[-2000:]  # both ranks, the same sentence
    assert not (runs / "nan" / "state.safetensors").exists()  # no epoch finished


@pytest.mark.slow
def test_a_rank_that_fails_alone_ends_the_launch_and_the_run_resumes(data, tmp_path):
    # Rank 1 alone fails in its second epoch (as a rank whose own slice of a streamed folder cannot be
    # read would); rank 0 is then waiting in a collective. torchrun must end the launch, not leave
    # rank 0 waiting for gloo's timeout (30 minutes), and the run resumes from its first epoch.
    script = tmp_path / "fail_on_rank_1.py"
    script.write_text(
        "import os, sys\n"
        "from convnet.cli import main\n"
        "from convnet.training.torch_trainer import TorchTrainer\n"
        "from convnet.errors import ConvnetError\n"
        "epoch_of = TorchTrainer.train_epoch\n"
        "def train_epoch(self, epoch, *args, **kwargs):\n"
        "    if os.environ['RANK'] == '1' and epoch == 1:\n"
        "        raise ConvnetError('rank 1 could not go on')\n"
        "    return epoch_of(self, epoch, *args, **kwargs)\n"
        "TorchTrainer.train_epoch = train_epoch\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    runs = tmp_path / "runs"
    start = time.perf_counter()
    result = subprocess.run([*TORCHRUN, "--nproc_per_node=2", str(script), "train", "--data", str(data),
                             "--runs-dir", str(runs), "--name", "alone", *ARGS, "--epochs", "3"],
                            capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=240)
    assert result.returncode != 0
    assert "error: rank 1 could not go on" in result.stderr
    assert time.perf_counter() - start < 120  # torchrun's teardown, not a collective's timeout
    assert [row["epoch"] for row in _history(runs / "alone")] == ["1"]
    done = subprocess.run([sys.executable, "-m", "convnet", "train", "--resume", str(runs / "alone"), "--quiet"],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [row["epoch"] for row in _history(runs / "alone")] == ["1", "2", "3"]
