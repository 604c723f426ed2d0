"""Time budgets: `convnet train --time-budget 8m` fits the run to the machine it runs on.

A probe trainer, built exactly as the run's, times a few training steps (the median of five
single steps after two untimed ones, or of three after one where a step takes over half a percent
of the budget; and again for the cheaper steps after --whiten-bias-epochs), one validation (the
final evaluation costs one per TTA view) and one checkpoint on this machine.
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

import json
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from convnet.engine.checkpoint import save_model
from convnet.engine.config import MAX_EPOCHS
from convnet.engine.distributed import Group, sum_over_ranks
from convnet.engine.loop import model_info
from convnet.engine.state_file import save_state
from convnet.engine.torch_trainer import TorchTrainer
from convnet.engine.tta import TTA_WEIGHTS
from convnet.files import atomic_write

SAFETY = 0.98  # the share of the budget the plan fills: estimates land within about 2.5% of the real time,
# so runs end between about 95.5% and 100.5% of the budget
WARMUP_STEPS = 2  # untimed training steps first
PROBE_STEPS = 5  # timed training steps, one at a time
# Where one step is a noticeable share of the budget (fp32 `fast` on an AVX2 laptop: 3 s of 8
# minutes), thirteen probe steps would spend a tenth of it measuring: one warm-up step and the
# median of three then.
SLOW_STEP_SHARE = 0.005
SLOW_WARMUP_STEPS, SLOW_PROBE_STEPS = 1, 3


def probe_steps(first_step_s: float, budget_s: float) -> tuple[int, int]:
    """(untimed warm-up steps, timed steps) for a machine whose first step took `first_step_s`."""
    if first_step_s > SLOW_STEP_SHARE * budget_s:
        return SLOW_WARMUP_STEPS, SLOW_PROBE_STEPS
    return WARMUP_STEPS, PROBE_STEPS


@dataclass(frozen=True)
class Plan:
    budget_s: float  # the budget asked for
    step_s: float  # measured seconds per training step (mean over the ranks under torchrun)
    frozen_step_s: float  # the same once --whiten-bias-epochs have passed (backward does less); step_s without them
    validation_s: float  # measured seconds of one validation pass (no TTA)
    checkpoint_s: float  # measured seconds of one epoch's checkpoint (model file and resume state)
    final_evaluation_s: float  # seconds of the final TTA evaluation: one validation per view (0 without TTA)
    probe_s: float  # what measuring took, counted in the budget
    probe_steps: int  # timed steps behind step_s (and frozen_step_s): fewer where steps are slow
    steps_per_epoch: int
    epochs: int  # the plan: epochs, the last of them stopping after last_epoch_steps steps (0: whole)
    last_epoch_steps: int
    estimated_s: float  # what the plan should take, probe included
    took_s: float | None = None  # what the run really took, written when it ends


def plan_epochs(trainer: TorchTrainer, budget_s: float, group: Group) -> Plan:
    """Measure `trainer` (a probe: it is trained on, then thrown away) and plan the epochs."""
    start = time.perf_counter()
    first_s = _timed(lambda: trainer.train_epoch(0, max_steps=1))  # allocator, kernels, caches: not counted
    if group.active:  # every rank must take as many steps (each is a collective): decided on the mean
        first_s = (sum_over_ranks(group, torch.tensor([first_s], dtype=torch.float64)) / group.world).item()
    warmup, timed = probe_steps(first_s, budget_s)
    for _ in range(warmup - 1):
        trainer.train_epoch(0, max_steps=1)
    # The median of single steps: one step slowed by another process does not skew the plan.
    step_s = statistics.median(_timed(lambda: trainer.train_epoch(0, max_steps=1)) for _ in range(timed))
    frozen_from = trainer.config.whiten_bias_epochs if trainer.whitening_bias is not None and not group.active else 0
    frozen_s = step_s
    if frozen_from:  # an epoch past them, where the whitening bias no longer learns
        trainer.train_epoch(frozen_from, max_steps=1)
        frozen_s = statistics.median(_timed(lambda: trainer.train_epoch(frozen_from, max_steps=1)) for _ in range(timed))
    validation_s = _timed(lambda: trainer.validate(0)) if trainer.data.val is not None else 0.0
    # The final evaluation passes every view of each image: it costs one validation per TTA view
    # (timing it instead would spend that much of the budget on measuring).
    final_s = validation_s * len(TTA_WEIGHTS[trainer.config.tta]) if trainer.config.tta else 0.0
    checkpoint_s = _timed(lambda: _checkpoint_to_scratch(trainer)) if group.main else 0.0
    probe_s = time.perf_counter() - start
    if group.active:  # every rank must plan the same run: the mean of every measurement (rank 0 alone saves)
        measured = torch.tensor([step_s, frozen_s, validation_s, final_s, checkpoint_s * group.world, probe_s], dtype=torch.float64)
        step_s, frozen_s, validation_s, final_s, checkpoint_s, probe_s = (sum_over_ranks(group, measured) / group.world).tolist()

    per_epoch = trainer.steps_per_epoch

    def estimate(epochs: int, last_steps: int = 0) -> float:
        """Seconds of a run of `epochs`, the last stopping after `last_steps` (0: whole), the probe included."""
        steps = (epochs - 1) * per_epoch + (last_steps or per_epoch)
        learning = min(steps, frozen_from * per_epoch) if frozen_from else steps  # steps that still train the whitening bias
        return probe_s + learning * step_s + (steps - learning) * frozen_s + epochs * (validation_s + checkpoint_s) + final_s

    limit = SAFETY * budget_s
    epochs = 1
    while epochs < MAX_EPOCHS and estimate(epochs + 1) <= limit:
        epochs += 1
    last_steps = 0
    if epochs < MAX_EPOCHS and estimate(epochs) <= limit and per_epoch > 1:
        # The most steps of one more epoch that still fit; none if not even one does.
        fits = [s for s in range(1, per_epoch) if estimate(epochs + 1, s) <= limit]
        if fits:
            epochs, last_steps = epochs + 1, fits[-1]
    return Plan(budget_s, step_s, frozen_s, validation_s, checkpoint_s, final_s, probe_s, timed, per_epoch, epochs, last_steps,
                estimate(epochs, last_steps))


def write_plan(path: Path, plan: Plan) -> None:
    text = json.dumps(asdict(plan), indent=2)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text + "\n"))


def describe(plan: Plan) -> str:
    last = f", the last stopping after {plan.last_epoch_steps}" if plan.last_epoch_steps else ""
    text = (f"time budget {plan.budget_s:.0f} s: {plan.step_s * 1000:.0f} ms per step, {plan.validation_s:.1f} s per validation, "
            f"so {plan.epochs} epochs of {plan.steps_per_epoch} steps{last} (about {plan.estimated_s:.0f} s)")
    if plan.estimated_s > plan.budget_s:
        text += "; even one epoch takes longer than the budget on this machine, so the run will end late"
    return text


def _checkpoint_to_scratch(trainer: TorchTrainer) -> None:
    """What `TorchTrainer.save` writes each epoch, written to a folder that is then deleted."""
    with tempfile.TemporaryDirectory() as tmp:
        save_model(Path(tmp) / "model.safetensors", trainer.eval_model, model_info(trainer.config, trainer.data, {}))
        save_state(Path(tmp) / "state.safetensors", {"model": trainer.model.state_dict(), "optimizer": trainer.optimizer.state_dict()})


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
