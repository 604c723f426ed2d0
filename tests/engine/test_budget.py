"""--time-budget: the run measures this machine, plans its epochs and ends within the budget."""
from __future__ import annotations

import argparse
import json
import time

import pytest

from convnet.cli._common import duration
from convnet.data.image_folder import DataWarning
from convnet.engine.budget import PROBE_STEPS, SLOW_PROBE_STEPS, probe_steps
from convnet.engine.config import TrainConfig
from convnet.engine.state_file import read_state
from convnet.engine.train import train
from convnet.errors import ConfigError
from tests.helpers import write_colour_folder

BUDGET = 12.0  # seconds
# A run may end late by this share of the budget: CI machines are shared, and the plan is made
# from a few steps' timing (engine.budget plans at 98% of the budget to absorb the usual drift).
TOLERANCE = 0.30
SAFETY = 0.98  # engine.budget's share of the budget that a plan fills


def _estimate(plan: dict, epochs: int, last_steps: int, frozen_from: int = 0) -> float:
    """engine.budget's estimate written out: steps that still train the whitening bias at the
    measured rate, the rest at the frozen rate, a validation, a checkpoint and an epoch's start-up
    per epoch, the final evaluation and the probe."""
    steps = (epochs - 1) * plan["steps_per_epoch"] + (last_steps or plan["steps_per_epoch"])
    learning = min(steps, frozen_from * plan["steps_per_epoch"]) if frozen_from else steps
    return (plan["probe_s"] + learning * plan["step_s"] + (steps - learning) * plan["frozen_step_s"]
            + epochs * (plan["validation_s"] + plan["checkpoint_s"] + plan["epoch_start_s"]) + plan["final_evaluation_s"])


def _one_step_more(plan: dict) -> tuple[int, int]:
    """(epochs, last_epoch_steps) of the plan with one more training step."""
    epochs, last = plan["epochs"], plan["last_epoch_steps"]
    if last and last + 1 < plan["steps_per_epoch"]:
        return epochs, last + 1
    return (epochs, 0) if last else (epochs + 1, 1)


@pytest.mark.parametrize("text, seconds", [("8m", 480.0), ("90s", 90.0), ("1h30m", 5400.0), ("480", 480.0), ("2.5m", 150.0), (" 8M ", 480.0)])
def test_durations(text, seconds):
    assert duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "0", "0s", "-1m", "8 minutes", "m"])
def test_bad_durations_are_refused(text):
    with pytest.raises(argparse.ArgumentTypeError):
        duration(text)


def test_a_budgeted_run_plans_its_epochs_and_ends_within_the_budget(colour_folder, tmp_path):
    config = TrainConfig(data=str(colour_folder), image_size=(32, 32), batch_size=8, schedule="linear", time_budget=BUDGET,
                         runs_dir=str(tmp_path / "runs"), name="budget", epochs=1)
    start = time.perf_counter()
    result = train(config, progress=False)
    wall = time.perf_counter() - start
    plan = json.loads((result.run_dir / "plan.json").read_text())
    saved = json.loads((result.run_dir / "config.json").read_text())
    assert plan["budget_s"] == BUDGET and plan["epochs"] >= 3, plan  # many epochs fit: the plan, not --epochs 1, decides
    assert plan["probe_steps"] == PROBE_STEPS, "a step here is far under half a percent of the budget"
    assert saved["epochs"] == plan["epochs"] == len(result.history), "config.json and the run follow the plan"
    assert saved["last_epoch_steps"] == plan["last_epoch_steps"]
    # The plan fills the budget to the step: it fits at SAFETY of it, and one step more would not.
    assert plan["estimated_s"] == pytest.approx(_estimate(plan, plan["epochs"], plan["last_epoch_steps"]))
    assert plan["estimated_s"] <= SAFETY * BUDGET < _estimate(plan, *_one_step_more(plan)), plan
    # The run trained exactly the planned steps: Adam counts them.
    steps = (plan["epochs"] - 1) * plan["steps_per_epoch"] + (plan["last_epoch_steps"] or plan["steps_per_epoch"])
    state = read_state(result.run_dir / "state.safetensors")
    assert {float(s["step"]) for s in state["optimizer"]["state"].values()} == {steps}
    assert plan["took_s"] <= BUDGET * (1 + TOLERANCE), plan
    assert wall <= BUDGET * (1 + TOLERANCE) + 5, "data loading and start-up come on top of the budget"
    # The linear schedule spans the planned run: the rate falls to about 0 at its last step.
    lrs = [row["lr"] for row in result.history]
    assert lrs[-1] < lrs[0] / plan["epochs"] * 1.5


def test_slow_steps_are_probed_fewer_times():
    # Half a percent of the budget is the line: 2.4 s of 8 minutes.
    assert probe_steps(2.0, 480.0) == PROBE_STEPS == 5
    assert probe_steps(3.2, 480.0) == SLOW_PROBE_STEPS == 3


def test_a_streamed_run_counts_its_loader_start_once_per_epoch_and_fills_its_budget(tmp_path):
    # A streamed split starts loader processes at every epoch: far more than a step of these tiny
    # images. Timed as part of every probe step, it made a 20 s budget end after 2.3 s.
    folder = write_colour_folder(tmp_path / "pics", per_class=100)
    config = TrainConfig(data=str(folder), image_size=(32, 32), batch_size=8, stream=True, loader_workers=2, schedule="linear",
                         time_budget=BUDGET, runs_dir=str(tmp_path / "runs"), name="streamed", epochs=1)
    with pytest.warns(DataWarning, match="Caching"):
        result = train(config, progress=False)
    plan = json.loads((result.run_dir / "plan.json").read_text())
    assert plan["epoch_start_s"] > plan["step_s"], plan
    assert plan["epochs"] == len(result.history) >= 2, plan
    # Steps of a few ms time noisily, so the bound below is loose; the fault it guards against ran 9x short.
    assert BUDGET / 2 <= plan["took_s"] <= BUDGET * (1 + TOLERANCE), plan


def test_a_budget_of_a_few_steps_spends_less_of_it_probing(colour_folder, tmp_path):
    # A budget of 0.1 s: any training step (a few ms here) is over half a percent of it (0.5 ms).
    config = TrainConfig(data=str(colour_folder), batch_size=8, time_budget=0.1, runs_dir=str(tmp_path / "runs"), name="tiny")
    result = train(config, progress=False)
    plan = json.loads((result.run_dir / "plan.json").read_text())
    assert plan["probe_steps"] == SLOW_PROBE_STEPS and plan["epochs"] == len(result.history), plan


def test_the_scratch_engine_refuses_a_budget(colour_folder, tmp_path):
    config = TrainConfig(data=str(colour_folder), engine="scratch", time_budget=30.0, runs_dir=str(tmp_path / "runs"), name="s")
    with pytest.raises(ConfigError, match="--time-budget"):
        train(config, progress=False)
    assert not (tmp_path / "runs" / "s").exists()


def test_a_plan_counts_the_cheaper_steps_after_the_whitening_bias_freezes(colour_folder, tmp_path):
    config = TrainConfig(data=str(colour_folder), model="airnet", model_args={"widths": [8, 16, 16]}, batch_size=8, whiten_bias_epochs=1,
                         schedule="linear", tta=2, time_budget=BUDGET, runs_dir=str(tmp_path / "runs"), name="airnet", epochs=1)
    plan = json.loads((train(config, progress=False).run_dir / "plan.json").read_text())
    assert plan["epochs"] >= 2, plan
    # The first epoch's steps at the measured rate, the others at the frozen rate.
    assert plan["estimated_s"] == pytest.approx(_estimate(plan, plan["epochs"], plan["last_epoch_steps"], frozen_from=1))
    assert plan["final_evaluation_s"] == pytest.approx(6 * plan["validation_s"]), "TTA level 2 passes 6 views of each image"
