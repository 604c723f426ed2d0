"""The training loop: it learns, its run folder is complete, resume repeats the run exactly."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from convnet.errors import ConfigError
from convnet.inference.runtime import autocast_dtype
from convnet.training.config import TrainConfig
from convnet.training.state_file import read_state
from convnet.training.train import TrainingDiverged, resume, train
from tests.helpers import train_interrupted, write_colour_folder


def _config(data, tmp_path, **kw):
    base = dict(data=str(data), runs_dir=str(tmp_path / "runs"), name="r", epochs=2, batch_size=16, val_split=0.25)
    return TrainConfig(**{**base, **kw})


def test_overfits_a_tiny_batch(colour_folder, tmp_path):
    result = train(_config(colour_folder, tmp_path, limit=12, val_split=0.0, epochs=40, batch_size=12, lr=3e-3),
                   progress=False)
    assert result.metrics["train_acc"] == 1.0
    assert float(result.history[-1]["train_loss"]) < 0.1 * float(result.history[0]["train_loss"])


def test_run_folder_holds_everything_documented(tmp_path):
    # 40 images per class, 8 of each class's folder of another colour: labels no model can learn,
    # so validation accuracy lands strictly between chance and 1 and says how many images it counted.
    data = write_colour_folder(tmp_path / "data", per_class=40)
    for src, dst in (("red", "green"), ("green", "blue"), ("blue", "red")):
        for i in range(8):
            (data / src / f"{i:03d}.png").rename(data / dst / f"{src}{i:03d}.png")
    result = train(_config(data, tmp_path), progress=False)
    files = {p.name for p in result.run_dir.iterdir()}
    assert {"config.json", "history.csv", "model.safetensors", "state.safetensors", "curves.png",
            "samples.png"} <= files
    config = TrainConfig.from_dict(json.loads((result.run_dir / "config.json").read_text()))
    assert config == _config(data, tmp_path)
    rows = list(csv.DictReader(open(result.run_dir / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    # A quarter carved out for validation: 30 images, so the accuracy is a count of 30, well above
    # chance (10 of 30) after 2 epochs and below 30 of 30 (the mislabelled images carved with them).
    correct = float(rows[-1]["val_acc"]) * 30
    assert correct == pytest.approx(round(correct)) and 15 <= round(correct) <= 29


def test_an_existing_run_folder_is_not_overwritten(colour_folder, tmp_path):
    train(_config(colour_folder, tmp_path, epochs=1), progress=False)
    before = (tmp_path / "runs/r/model.safetensors").read_bytes()
    with pytest.raises(ConfigError, match="--resume"):
        train(_config(colour_folder, tmp_path, epochs=1), progress=False)
    assert (tmp_path / "runs/r/model.safetensors").read_bytes() == before


def test_a_setting_the_model_refuses_leaves_no_run_folder(colour_folder, tmp_path):
    with pytest.raises(ConfigError, match="BatchNorm"):
        train(_config(colour_folder, tmp_path, optimizer="muon"), progress=False)
    assert not (tmp_path / "runs/r").exists()


def test_divergence_stops_and_keeps_the_last_good_checkpoint(colour_folder, tmp_path):
    train(_config(colour_folder, tmp_path, epochs=1, optimizer="sgd", lr=0.01), progress=False)
    run = tmp_path / "runs/r"
    good = (run / "model.safetensors").read_bytes()
    config = json.loads((run / "config.json").read_text())
    config.update(epochs=2, lr=1e30)  # the user edits the run to something absurd (inf is refused up front)
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(TrainingDiverged, match="last good checkpoint"):
        resume(run, progress=False)
    assert (run / "model.safetensors").read_bytes() == good
    assert len(list(csv.DictReader(open(run / "history.csv")))) == 1


@pytest.mark.slow
def test_resume_after_a_kill_ends_like_an_uninterrupted_run(tmp_path):
    data = write_colour_folder(tmp_path / "data", per_class=200)
    args = ["--data", str(data), "--epochs", "4", "--batch-size", "8", "--runs-dir", str(tmp_path / "runs"), "--quiet"]
    subprocess.run([sys.executable, "-m", "convnet", "train", *args, "--name", "whole"], check=True)

    proc = subprocess.Popen([sys.executable, "-m", "convnet", "train", *args, "--name", "killed"])
    state_file = tmp_path / "runs/killed/state.safetensors"  # written last at the end of an epoch
    deadline = time.time() + 120
    while time.time() < deadline and not state_file.exists():
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    state = read_state(state_file)
    assert 1 <= state["epoch"] < 4, "the kill must land mid-run for this test to mean anything"

    subprocess.run([sys.executable, "-m", "convnet", "train", "--resume", str(tmp_path / "runs/killed"), "--quiet"],
                   check=True)
    whole, resumed = (load_file(tmp_path / "runs/whole/model.safetensors"),
                      load_file(tmp_path / "runs/killed/model.safetensors"))
    assert whole.keys() == resumed.keys()
    for k in whole:
        assert torch.equal(whole[k], resumed[k]), k
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in rows]  # noqa: E731
    read = lambda name: list(csv.DictReader(open(tmp_path / f"runs/{name}/history.csv")))  # noqa: E731
    assert strip(read("whole")) == strip(read("killed"))


def test_same_seed_same_weights_on_cpu(colour_folder, tmp_path):
    a = train(_config(colour_folder, tmp_path, name="a", epochs=1), progress=False)
    b = train(_config(colour_folder, tmp_path, name="b", epochs=1), progress=False)
    wa, wb = load_file(a.run_dir / "model.safetensors"), load_file(b.run_dir / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_compiling_is_refused_on_the_cpu_and_in_bf16_and_trains_in_fp32_on_a_gpu(colour_folder, tmp_path):
    # On the CPU, torch's compiled max-pool backward gives NaN gradients or crashes
    # (benchmarks/results/compile_cpu.json); compiled bf16 training diverged on a GPU
    # (inference.runtime.autocast_dtype). Neither refusal leaves a run folder behind.
    for precision in ("auto", "bf16"):
        with pytest.raises(ConfigError, match="--compile is not supported on the CPU"):
            train(_config(colour_folder, tmp_path, compile=True, precision=precision, device="cpu"), progress=False)
        assert not (tmp_path / "runs" / "r").exists()
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for precision in ("auto", "fp32", "bf16"):
        with pytest.raises(ConfigError, match="not supported on the CPU"):
            autocast_dtype(precision, cpu, compiled=True)
    assert autocast_dtype("auto", cuda, compiled=True) is None and autocast_dtype("fp32", cuda, compiled=True) is None
    with pytest.raises(ConfigError, match="--compile with --precision bf16"):
        autocast_dtype("bf16", cuda, compiled=True)
    assert autocast_dtype("bf16", cpu) is torch.bfloat16


def test_a_run_compiled_on_a_gpu_resumes_on_the_cpu_without_compiling(colour_folder, tmp_path, monkeypatch):
    whole = train(_config(colour_folder, tmp_path, name="whole"), progress=False)
    train_interrupted(monkeypatch, _config(colour_folder, tmp_path, name="gpu"), epoch=1)
    config_path = tmp_path / "runs" / "gpu" / "config.json"
    # as a --compile run on a GPU wrote it
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "compile": True}))
    resumed = resume(tmp_path / "runs" / "gpu", progress=False)
    a, b = load_file(whole.run_dir / "model.safetensors"), load_file(resumed.run_dir / "model.safetensors")
    assert len(resumed.history) == 2 and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads(config_path.read_text())["compile"] is True, "the run folder still says how it was started"


def test_the_last_epoch_stops_after_its_steps_and_the_schedule_ends_with_them(colour_folder, tmp_path):
    def trained(name, **kw):
        result = train(_config(colour_folder, tmp_path, name=name, schedule="linear", **kw), progress=False)
        steps = {float(s["step"])
                 for s in read_state(result.run_dir / "state.safetensors")["optimizer"]["state"].values()}
        return result, steps.pop()

    whole, whole_steps = trained("whole")
    per_epoch = whole_steps / 2
    assert per_epoch >= 2
    short, short_steps = trained("short", last_epoch_steps=1)
    assert short_steps == per_epoch + 1 and len(short.history) == 2
    # Linear decay reaches 0 exactly at the planned last step, not at the end of a whole epoch.
    assert (short.history[-1]["lr"] == 0.0
            and short.history[0]["lr"] == pytest.approx(1e-3 * (1 - per_epoch / (per_epoch + 1))))
