"""Time budgets: `convnet train --time-budget 8m` fits the run to the machine it runs on.

A probe trainer, built exactly as the run's, times a few training steps (the median of five
steps, or of three where a step takes over half a percent of the budget, each timed on its own
within one pass after two untimed steps; and again for the cheaper steps after
--whiten-bias-epochs), one validation (the final evaluation costs one per TTA view) and one
checkpoint on this machine. The steps are taken in one pass, as a run takes them: the first step
of a pass also pays for starting an epoch (a streamed split's loader workers start then), which
the plan counts once per epoch. Timing steps each in a pass of its own counted that start-up in
every step, and a streamed run then ended at a tenth of its budget.
The plan is then the largest number of whole epochs whose training, per-epoch validation and
final evaluation (with its TTA) fit in the budget, and as many steps of one more epoch as fit in
what is left (that epoch stops early, as airbench's 9.9 epochs do), planned at SAFETY of the
budget so that a busy machine's drift stays inside. Whole epochs alone would leave up to one
epoch's time unused: a tenth of the budget for `fast` in 8 minutes. The run then trains with
`epochs` and `last_epoch_steps` set to the plan, so the learning-rate schedule (warm-up, linear
decay) spans exactly the planned steps, and a resumed run follows the same plan. The clock
starts when the probe does (the data is loaded by then): the budget covers training plus the
final evaluation.

The run folder keeps `plan.json`: the budget, what was measured, the plan and, at the end, the
time the run really took.
"""
from __future__ import annotations

import itertools
import json
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from convnet.files import atomic_write
from convnet.inference.tta import TTA_WEIGHTS
from convnet.training.config import MAX_EPOCHS
from convnet.training.distributed import Group, sum_over_ranks
from convnet.training.run_folder import RunFolder
from convnet.training.torch_trainer import TorchTrainer

SAFETY = 0.98  # the share of the budget the plan fills: estimates land within about 2.5% of the real time,
# so runs end between about 95.5% and 100.5% of the budget
PROBE_STEPS = 5  # timed training steps, one at a time
# Where one step is a noticeable share of the budget (fp32 `fast` on an AVX2 laptop: 3 s of 8
# minutes), thirteen probe steps would spend a tenth of it measuring: the median of three then.
SLOW_STEP_SHARE = 0.005
SLOW_PROBE_STEPS = 3


def probe_steps(first_step_s: float, budget_s: float) -> int:
    """How many steps to time on a machine whose first step took `first_step_s`."""
    return SLOW_PROBE_STEPS if first_step_s > SLOW_STEP_SHARE * budget_s else PROBE_STEPS


@dataclass(frozen=True)
class BudgetPlan:
    budget_s: float  # the budget asked for
    step_s: float  # measured seconds per training step (mean over the ranks under torchrun)
    frozen_step_s: float  # the same once --whiten-bias-epochs have passed (backward does less); step_s without them
    validation_s: float  # measured seconds of one validation pass (no TTA)
    checkpoint_s: float  # measured seconds of one epoch's checkpoint (model file and resume state)
    epoch_start_s: float  # measured seconds of starting an epoch beyond a step (a streamed split's loader workers)
    final_evaluation_s: float  # seconds of the final TTA evaluation: one validation per view (0 without TTA)
    probe_s: float  # what measuring took, counted in the budget
    probe_steps: int  # timed steps behind step_s (and frozen_step_s): fewer where steps are slow
    steps_per_epoch: int
    epochs: int  # the plan: epochs, the last of them stopping after last_epoch_steps steps (0: whole)
    last_epoch_steps: int
    estimated_s: float  # what the plan should take, probe included
    took_s: float | None = None  # what the run really took, written when it ends


def plan_epochs(trainer: TorchTrainer, budget_s: float, group: Group) -> BudgetPlan:
    """Measure `trainer` (a probe: it is trained on, then thrown away) and plan the epochs."""
    start = time.perf_counter()
    first_s = _timed(lambda: trainer.train_epoch(0, max_steps=1))  # allocator, kernels, caches: not counted
    if group.active:  # every rank must take as many steps (each is a collective): decided on the mean
        first_s = (sum_over_ranks(group, torch.tensor([first_s], dtype=torch.float64)) / group.world).item()
    timed = probe_steps(first_s, budget_s)
    # The median of single steps: one step slowed by another process does not skew the plan.
    opening_s, *steps = _step_times(trainer, 0, 1 + timed)
    step_s = statistics.median(steps)
    epoch_start_s = max(0.0, opening_s - step_s)
    frozen_from = trainer.config.whiten_bias_epochs if trainer.whitening is not None else 0  # (None under torchrun)
    frozen_s = step_s
    if frozen_from:  # an epoch past them, where the whitening bias no longer learns
        frozen_s = statistics.median(_step_times(trainer, frozen_from, 1 + timed)[1:])
    validation_s = _timed(lambda: trainer.validate(0)) if trainer.data.val is not None else 0.0
    # The final evaluation passes every view of each image: it costs one validation per TTA view
    # (timing it instead would spend that much of the budget on measuring).
    final_s = validation_s * len(TTA_WEIGHTS[trainer.config.tta]) if trainer.config.tta else 0.0
    checkpoint_s = _timed(lambda: _checkpoint_to_scratch(trainer)) if group.main else 0.0
    probe_s = time.perf_counter() - start
    if group.active:  # every rank must plan the same run: the mean of every measurement (rank 0 alone saves)
        measured = torch.tensor([step_s, frozen_s, validation_s, final_s, checkpoint_s * group.world, epoch_start_s,
                                 probe_s], dtype=torch.float64)
        step_s, frozen_s, validation_s, final_s, checkpoint_s, epoch_start_s, probe_s = (
            sum_over_ranks(group, measured) / group.world).tolist()

    rates = Rates(step_s=step_s, frozen_step_s=frozen_s, validation_s=validation_s, checkpoint_s=checkpoint_s,
                  epoch_start_s=epoch_start_s, final_evaluation_s=final_s, probe_s=probe_s)
    epochs, last_steps = fit(rates, trainer.steps_per_epoch, frozen_from, SAFETY * budget_s)
    return BudgetPlan(budget_s=budget_s, step_s=step_s, frozen_step_s=frozen_s, validation_s=validation_s,
                      checkpoint_s=checkpoint_s, epoch_start_s=epoch_start_s, final_evaluation_s=final_s,
                      probe_s=probe_s, probe_steps=timed,
                      steps_per_epoch=trainer.steps_per_epoch, epochs=epochs, last_epoch_steps=last_steps,
                      estimated_s=rates.estimate(trainer.steps_per_epoch, frozen_from, epochs, last_steps))


@dataclass(frozen=True)
class Rates:
    """What the probe measured, in seconds (see BudgetPlan)."""

    step_s: float
    frozen_step_s: float
    validation_s: float
    checkpoint_s: float
    epoch_start_s: float
    final_evaluation_s: float
    probe_s: float

    def estimate(self, per_epoch: int, frozen_from: int, epochs: int, last_steps: int = 0) -> float:
        """Seconds of a run of `epochs` of `per_epoch` steps, the last stopping after `last_steps` (0: whole), the
        probe included; steps after `frozen_from` epochs (0: never) at the frozen rate."""
        steps = (epochs - 1) * per_epoch + (last_steps or per_epoch)
        # steps that still train the whitening bias
        learning = min(steps, frozen_from * per_epoch) if frozen_from else steps
        return (self.probe_s + learning * self.step_s + (steps - learning) * self.frozen_step_s
                + epochs * (self.validation_s + self.checkpoint_s + self.epoch_start_s) + self.final_evaluation_s)


def fit(rates: Rates, per_epoch: int, frozen_from: int, limit_s: float) -> tuple[int, int]:
    """(epochs, last_epoch_steps): the most whole epochs that fit in `limit_s`, then as many steps of
    one more as still fit (0: none). At least one whole epoch, even where it does not fit."""

    def fits(epochs: int, last_steps: int = 0) -> bool:
        return rates.estimate(per_epoch, frozen_from, epochs, last_steps) <= limit_s

    epochs = 1
    while epochs < MAX_EPOCHS and fits(epochs + 1):
        epochs += 1
    if epochs < MAX_EPOCHS and fits(epochs) and per_epoch > 1:
        steps = [s for s in range(1, per_epoch) if fits(epochs + 1, s)]
        if steps:
            return epochs + 1, steps[-1]
    return epochs, 0


def write_plan(path: Path, plan: BudgetPlan) -> None:
    text = json.dumps(asdict(plan), indent=2)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text + "\n"))


def describe(plan: BudgetPlan) -> str:
    last = f", the last stopping after {plan.last_epoch_steps}" if plan.last_epoch_steps else ""
    text = (f"time budget {plan.budget_s:.0f} s: {plan.step_s * 1000:.0f} ms per step, "
            f"{plan.validation_s:.1f} s per validation, "
            f"so {plan.epochs} epochs of {plan.steps_per_epoch} steps{last} (about {plan.estimated_s:.0f} s)")
    if plan.estimated_s > plan.budget_s:
        text += "; even one epoch takes longer than the budget on this machine, so the run will end late"
    return text


def _checkpoint_to_scratch(trainer: TorchTrainer) -> None:
    """What the trainer writes each epoch, written by the trainer itself to a folder that is then deleted."""
    with tempfile.TemporaryDirectory() as tmp:
        trainer.write_checkpoint(RunFolder(tmp), epoch=0)


def _step_times(trainer: TorchTrainer, epoch: int, steps: int) -> list[float]:
    """Seconds of each of the first `steps` steps of `epoch`, taken in one pass: the first counts
    from the start of the pass, so it includes what starting an epoch costs."""
    marks = [time.perf_counter()]

    def mark() -> None:
        if trainer.device.type == "cuda":
            torch.cuda.synchronize(trainer.device)  # the step's kernels have run, not only been queued
        marks.append(time.perf_counter())

    trainer.train_epoch(epoch, max_steps=steps, on_step=mark)
    return [later - earlier for earlier, later in itertools.pairwise(marks)]


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
