"""--time-budget: the run measures this machine, plans its epochs and ends within the budget."""
from __future__ import annotations

import argparse
import json

import pytest

from convnet.cli._common import duration
from convnet.data.image_folder import DataWarning
from convnet.errors import ConfigError
from convnet.training.budget import PROBE_STEPS, SAFETY, SLOW_PROBE_STEPS, Rates, fit, probe_steps
from convnet.training.config import TrainConfig
from convnet.training.state_file import read_state
from convnet.training.torch_trainer import TorchTrainer
from convnet.training.train import train
from tests.helpers import write_colour_folder

BUDGET = 12.0  # seconds
# How close to its budget a run ends is a wall-clock claim, so it is measured by
# benchmarks/time_to_accuracy.py on a quiet machine, not asserted here: the plan is made from a few
# steps' timing, and a machine that gets busier or quieter after the probe moves the end with it.
# These tests check what holds at any speed: the plan fills the budget by its own measurements, and
# the run follows the plan step for step.


def rates_of(plan: dict) -> Rates:
    """The measurements a plan.json records."""
    return Rates(**{name: plan[name] for name in Rates.__dataclass_fields__})


@pytest.mark.parametrize("text, seconds", [("8m", 480.0), ("90s", 90.0), ("1h30m", 5400.0), ("480", 480.0),
                                           ("2.5m", 150.0), (" 8M ", 480.0)])
def test_durations(text, seconds):
    assert duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "0", "0s", "-1m", "8 minutes", "m"])
def test_bad_durations_are_refused(text):
    with pytest.raises(argparse.ArgumentTypeError):
        duration(text)


@pytest.mark.slow
def test_a_budgeted_run_plans_its_epochs_to_fill_the_budget_and_trains_them(colour_folder, tmp_path):
    config = TrainConfig(data=str(colour_folder), image_size=(32, 32), batch_size=8, schedule="linear",
                         time_budget=BUDGET, runs_dir=str(tmp_path / "runs"), name="budget", epochs=1)
    result = train(config, progress=False)
    plan = json.loads((result.run_dir / "plan.json").read_text())
    saved = json.loads((result.run_dir / "config.json").read_text())
    assert plan["budget_s"] == BUDGET, plan
    assert plan["probe_steps"] in (PROBE_STEPS, SLOW_PROBE_STEPS), plan  # which one depends on this machine's speed
    assert saved["epochs"] == plan["epochs"] == len(result.history), "config.json and the run follow the plan"
    assert saved["last_epoch_steps"] == plan["last_epoch_steps"]
    # The plan is the fit of what the probe measured (test_fit_* check the fit against hand-worked numbers).
    assert (plan["epochs"], plan["last_epoch_steps"]) == fit(rates_of(plan), plan["steps_per_epoch"], 0,
                                                             SAFETY * BUDGET), plan
    assert plan["estimated_s"] == pytest.approx(rates_of(plan).estimate(plan["steps_per_epoch"], 0, plan["epochs"],
                                                                        plan["last_epoch_steps"]))
    # The run trained exactly the planned steps: Adam counts them.
    steps = (plan["epochs"] - 1) * plan["steps_per_epoch"] + (plan["last_epoch_steps"] or plan["steps_per_epoch"])
    state = read_state(result.run_dir / "state.safetensors")
    assert {float(s["step"]) for s in state["optimizer"]["state"].values()} == {steps}
    assert plan["took_s"] > 0
    # The linear schedule spans the planned run: the rate falls to about 0 at its last step.
    lrs = [row["lr"] for row in result.history]
    assert lrs[-1] <= lrs[0] / plan["epochs"] * 1.5


def test_slow_steps_are_probed_fewer_times():
    # Half a percent of the budget is the line: 2.4 s of 8 minutes.
    assert probe_steps(2.0, 480.0) == PROBE_STEPS == 5
    assert probe_steps(3.2, 480.0) == SLOW_PROBE_STEPS == 3


@pytest.mark.slow
def test_a_streamed_run_times_its_probe_steps_in_one_pass(tmp_path, monkeypatch):
    # A streamed split starts loader processes at every pass: far more than a step of these tiny
    # images. The probe once timed each step in a pass of its own, so every step was charged a
    # loader start, and a 20 s budget ended after 2.3 s. Which passes the probe takes is what
    # decides it, whatever this machine's speed: each timed pass must time several steps.
    passes = []
    real = TorchTrainer.train_epoch

    def recorded(self, epoch, max_steps=None, on_step=None):
        passes.append((max_steps, on_step is not None))
        return real(self, epoch, max_steps=max_steps, on_step=on_step)

    monkeypatch.setattr(TorchTrainer, "train_epoch", recorded)
    folder = write_colour_folder(tmp_path / "pics", per_class=100)
    config = TrainConfig(data=str(folder), image_size=(32, 32), batch_size=8, stream=True, loader_workers=2,
                         schedule="linear", time_budget=BUDGET, runs_dir=str(tmp_path / "runs"), name="streamed",
                         epochs=1)
    with pytest.warns(DataWarning, match="Caching"):
        result = train(config, progress=False)
    plan = json.loads((result.run_dir / "plan.json").read_text())
    timed = [steps for steps, timing in passes if timing]
    assert timed == [1 + plan["probe_steps"]], passes  # one pass: its first step also measures the loader's start
    assert plan["epoch_start_s"] > 0 and plan["epochs"] == len(result.history), plan


def test_a_budget_of_a_few_steps_spends_less_of_it_probing(colour_folder, tmp_path):
    # A budget of 0.1 s: any training step (a few ms here) is over half a percent of it (0.5 ms).
    config = TrainConfig(data=str(colour_folder), batch_size=8, time_budget=0.1, runs_dir=str(tmp_path / "runs"),
                         name="tiny")
    result = train(config, progress=False)
    plan = json.loads((result.run_dir / "plan.json").read_text())
    assert plan["probe_steps"] == SLOW_PROBE_STEPS and plan["epochs"] == len(result.history), plan


def test_the_scratch_engine_refuses_a_budget(colour_folder, tmp_path):
    config = TrainConfig(data=str(colour_folder), engine="scratch", time_budget=30.0, runs_dir=str(tmp_path / "runs"),
                         name="s")
    with pytest.raises(ConfigError, match="--time-budget"):
        train(config, progress=False)
    assert not (tmp_path / "runs" / "s").exists()


# Hand-worked: 4 steps an epoch of 1 s, 0.5 s once frozen; 0.25 s validation and 0.25 s checkpoint per
# epoch; 2 s final evaluation and 3 s probe. Frozen after epoch 1: 1 epoch takes 9.5 s, 2 take 12 s,
# 3 take 14.5 s, and 2 plus 1, 2 or 3 steps take 13, 13.5 and 14 s. Never frozen: 9.5, 14 and 18.5 s,
# and 2 epochs plus 1 step 15.5 s.
HAND = Rates(step_s=1.0, frozen_step_s=0.5, validation_s=0.25, checkpoint_s=0.25, epoch_start_s=0.0,
             final_evaluation_s=2.0, probe_s=3.0)


@pytest.mark.parametrize("frozen_from, limit_s, plan", [
    (1, 14.0, (3, 3)), (1, 13.2, (3, 1)), (1, 12.0, (2, 0)), (0, 14.0, (2, 0)), (0, 15.9, (3, 1)), (1, 5.0, (1, 0)),
], ids=["frozen: 2 epochs and 3 steps", "frozen: 2 epochs and 1 step", "frozen: 2 whole epochs", "never frozen",
        "never frozen: one step more", "not even one epoch fits: one, late"])
def test_fit_plans_whole_epochs_then_the_steps_of_one_more_that_fit(frozen_from, limit_s, plan):
    assert fit(HAND, 4, frozen_from, limit_s) == plan


def test_an_estimate_counts_epoch_start_up_once_per_epoch():
    started = Rates(**{**HAND.__dict__, "epoch_start_s": 1.0})
    assert started.estimate(4, 1, 3) - HAND.estimate(4, 1, 3) == 3.0
    # an epoch that stops early starts all the same
    assert started.estimate(4, 1, 3, 2) - HAND.estimate(4, 1, 3, 2) == 3.0


@pytest.mark.slow
def test_a_plan_measures_the_cheaper_steps_after_the_whitening_bias_freezes(colour_folder, tmp_path):
    config = TrainConfig(data=str(colour_folder), model="airnet", model_args={"widths": [8, 16, 16]}, batch_size=8,
                         whiten_bias_epochs=1, schedule="linear", tta=2, time_budget=BUDGET,
                         runs_dir=str(tmp_path / "runs"), name="airnet", epochs=1)
    plan = json.loads((train(config, progress=False).run_dir / "plan.json").read_text())
    # Planned with the steps of epochs after the first at the frozen rate, which the probe measured.
    assert plan["frozen_step_s"] > 0 and plan["frozen_step_s"] != plan["step_s"], plan
    assert (plan["epochs"], plan["last_epoch_steps"]) == fit(rates_of(plan), plan["steps_per_epoch"], 1,
                                                             SAFETY * BUDGET), plan
    assert plan["final_evaluation_s"] == pytest.approx(6 * plan["validation_s"]), (
        "TTA level 2 passes 6 views of each image")
