"""--whiten-bias-epochs: airnet's whitening bias learns only in the first epochs (airbench's rule).

Checked against the rule written out here: its rate falls on a straight line to 0 over those
epochs while every other group follows the run's schedule; afterwards the bias never moves,
backward no longer computes the first conv's input gradient (the saving), and a run resumed
within or past them ends bitwise like an uninterrupted one.
"""
import dataclasses
import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from convnet.errors import ConfigError
from convnet.training.config import TrainConfig
from convnet.training.prepare import prepare_data
from convnet.training.recipes import RECIPES
from convnet.training.run_folder import RunFolder
from convnet.training.state_file import read_state, save_state
from convnet.training.torch_trainer import TorchTrainer
from convnet.training.train import resume, train
from tests.helpers import train_interrupted

WHITEN_EPOCHS = 1


def _config(data, tmp_path, name="r", **kw) -> TrainConfig:
    base = dict(data=str(data), runs_dir=str(tmp_path / "runs"), name=name, epochs=3, batch_size=24, val_split=0.25,
                whiten_bias_epochs=WHITEN_EPOCHS, precision="fp32", model_args={"widths": [8, 16, 16]})
    return dataclasses.replace(RECIPES["fast"], **{**base, **kw})


def _trainer(config: TrainConfig) -> TorchTrainer:
    return TorchTrainer(config, prepare_data(config), RunFolder.create(config), progress=False)


def test_its_rate_falls_to_zero_over_its_epochs_while_the_others_follow_the_schedule(colour_folder, tmp_path):
    trainer = _trainer(_config(colour_folder, tmp_path))
    groups = trainer.optimizer.param_groups
    (short,) = [g for g in groups if any(p is trainer.model.whiten.bias for p in g["params"])]
    assert short["params"] == [trainer.model.whiten.bias]
    n, total = trainer.steps_per_epoch, 3 * trainer.steps_per_epoch
    peak = {id(g): g["initial_lr"] for g in groups}
    trainer.train_epoch(0, max_steps=2)
    assert short["lr"] == pytest.approx(peak[id(short)] * (1 - 2 / n))
    for g in groups:
        if g is not short:
            assert g["lr"] == pytest.approx(peak[id(g)] * (1 - 2 / total))  # the fast recipe's linear decay


def test_it_learns_in_its_epochs_then_never_moves(colour_folder, tmp_path):
    trainer = _trainer(_config(colour_folder, tmp_path))
    bias = trainer.model.whiten.bias
    start = bias.detach().clone()
    trainer.train_epoch(0)
    learned = bias.detach().clone()
    assert not torch.equal(learned, start)
    assert [g["lr"] for g in trainer.optimizer.param_groups if any(p is bias for p in g["params"])] == [0]
    head, conv = trainer.model.head.fc.weight.detach().clone(), trainer.model.groups[0].conv1.weight.detach().clone()
    for epoch in (1, 2):
        trainer.train_epoch(epoch)
        assert torch.equal(bias.detach(), learned)
    assert not torch.equal(trainer.model.groups[0].conv1.weight.detach(), conv), "the rest of the network still learns"
    assert not torch.equal(trainer.model.head.fc.weight.detach(), head)


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")  # the point: once frozen, no input needs a gradient
def test_once_frozen_backward_skips_the_first_convs_input_gradient(colour_folder, tmp_path):
    trainer = _trainer(_config(colour_folder, tmp_path))
    seen = []
    trainer.model.groups[0].conv1.register_full_backward_hook(
        lambda module, grad_in, grad_out: seen.append(grad_in[0] is not None))
    trainer.train_epoch(0, max_steps=1)
    trainer.train_epoch(WHITEN_EPOCHS, max_steps=1)
    assert seen == [True, False]


@pytest.mark.parametrize("whiten_epochs, killed_in", [(1, 2), (2, 1)],
                         ids=["killed-past-its-epochs", "killed-within-them"])
def test_a_resumed_run_ends_like_an_uninterrupted_one(colour_folder, tmp_path, monkeypatch, whiten_epochs, killed_in):
    whole = train(_config(colour_folder, tmp_path, name="whole", whiten_bias_epochs=whiten_epochs), progress=False)

    train_interrupted(monkeypatch, _config(colour_folder, tmp_path, name="killed", whiten_bias_epochs=whiten_epochs),
                      epoch=killed_in)
    assert read_state(tmp_path / "runs" / "killed" / "state.safetensors")["epoch"] == killed_in
    resumed = resume(tmp_path / "runs" / "killed", progress=False)
    a, b = load_file(whole.run_dir / "model.safetensors"), load_file(resumed.run_dir / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_state_whose_group_still_names_its_epochs_resumes_like_an_uninterrupted_run(colour_folder, tmp_path,
                                                                                       monkeypatch):
    # Runs written before the whitening layer detached its own bias kept "epochs": n in the bias's
    # parameter group; such a run resumes, and ends as if never interrupted.
    whole = train(_config(colour_folder, tmp_path, name="whole"), progress=False)
    train_interrupted(monkeypatch, _config(colour_folder, tmp_path, name="older"), epoch=1)
    live = _trainer(_config(colour_folder, tmp_path, name="live"))
    (index,) = [i for i, g in enumerate(live.optimizer.param_groups)
                if any(p is live.model.whiten.bias for p in g["params"])]
    path = tmp_path / "runs" / "older" / "state.safetensors"
    state = read_state(path)
    state["optimizer"]["param_groups"][index]["epochs"] = WHITEN_EPOCHS
    save_state(path, state)
    resumed = resume(tmp_path / "runs" / "older", progress=False)
    a, b = load_file(whole.run_dir / "model.safetensors"), load_file(resumed.run_dir / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_model_without_a_whitening_layer_is_refused(colour_folder, tmp_path):
    config = TrainConfig(data=str(colour_folder), runs_dir=str(tmp_path / "runs"), name="t", whiten_bias_epochs=2)
    with pytest.raises(ConfigError, match="whiten-bias-epochs"):
        train(config, progress=False)
    assert not (tmp_path / "runs" / "t").exists()
    cli = subprocess.run([sys.executable, "-m", "convnet", "train", "--data", str(colour_folder),
                          "--whiten-bias-epochs", "2", "--runs-dir", str(tmp_path / "runs"), "--quiet"],
                         capture_output=True, text=True)
    assert cli.returncode == 2 and "Traceback" not in cli.stderr
    assert len(cli.stderr.strip().splitlines()) == 1 and "airnet" in cli.stderr


@pytest.mark.slow
def test_the_fast_recipe_still_trains_another_model_from_the_command_line(colour_folder, tmp_path):
    # `fast` sets the rule for airnet's whitening layer; naming another model drops it (given explicitly, it is
    # refused above).
    cli = subprocess.run([sys.executable, "-m", "convnet", "train", "--recipe", "fast", "--model", "resnet",
                          "--data", str(colour_folder), "--epochs", "1", "--batch-size", "24",
                          "--runs-dir", str(tmp_path / "runs"), "--name", "resnet", "--quiet"],
                         capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    assert json.loads((tmp_path / "runs" / "resnet" / "config.json").read_text())["whiten_bias_epochs"] == 0
