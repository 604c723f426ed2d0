"""`train` and `resume`: the entry points the CLI and the Python API call.

They prepare the data (training.prepare), make or open the run folder (training.run_folder), pick
the engine the config names (ENGINES) and run the shared epoch loop (training.loop).
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import replace
from pathlib import Path

import torch

from convnet.data.batches import preview
from convnet.data.dataset import Dataset
from convnet.errors import ConvnetError
from convnet.inference.runtime import resolve_device
from convnet.training import budget, distributed
from convnet.training.config import TrainConfig
from convnet.training.loop import EpochLoop, RunResult, TrainData, TrainingDiverged
from convnet.training.prepare import prepare_data
from convnet.training.run_folder import RunFolder
from convnet.training.scratch_fit import ScratchTrainer
from convnet.training.torch_trainer import TorchTrainer
from convnet.viz.grid import save_image_grid
from convnet.viz.plots import plot_curves

__all__ = ["ENGINES", "RunResult", "TrainingDiverged", "resume", "train"]

ENGINES: dict[str, type[EpochLoop]] = {"torch": TorchTrainer, "scratch": ScratchTrainer}
SAMPLES = 25  # images in samples.png
FACT_CHARS = 200  # longest class list named in full when the processes of a launch see different classes


def train(config: TrainConfig, progress: bool = True) -> RunResult:
    """Train a model as `config` says and write its run folder (see training.run_folder).

    Under torchrun, every process calls this; they train one model together and rank 0 writes
    the run folder (training.distributed).
    """
    group = distributed.join(config)  # first: a launch that cannot work stops before any work
    try:
        run = _create_run(config, group)  # next: a taken name or a bad --runs-dir stops every rank
        try:
            data = prepare_data(config)
            # before the ranks' first collective on it, which would fail in gloo or DDP
            _check_same_data(config, data, group)
            trainer = _engine(config, data, run, progress, group)
            plan = None
            if config.time_budget is not None:
                plan = budget.plan_epochs(trainer, config.time_budget, group)
                clock = time.perf_counter()  # the plan's own time is plan.probe_s
                config = replace(config, epochs=plan.epochs, last_epoch_steps=plan.last_epoch_steps)
                trainer = _engine(config, data, run, progress, group)  # built afresh: the probe trained its own copy
            distributed.on_rank_0(group, lambda: _write_start(trainer, run, plan),
                                  "Rank 0 could not write the run folder (its error says why); no rank trained.")
            if plan is not None:
                trainer.say(budget.describe(plan))
        except BaseException:
            if group.main:
                # nothing trained (unreadable data, a setting the model refuses, Ctrl-C): no half-made folder
                run.discard()
            raise
        result = _fit(trainer, run, group)
        if plan is not None and group.main:
            budget.write_plan(run.plan_path, replace(plan, took_s=plan.probe_s + time.perf_counter() - clock))
        distributed.finish(group)
        return result
    finally:
        distributed.leave(group)


def resume(run_dir: str | Path, progress: bool = True) -> RunResult:
    """Continue a run after Ctrl-C or a kill; it ends as the uninterrupted run would have.

    Under torchrun, with any number of processes: the state holds the unwrapped model.
    """
    run = RunFolder.open(run_dir)
    config = run.read_config()
    if config.engine != "torch":
        raise ConvnetError("Runs of the scratch engine cannot be resumed; "
                           "start the run again (it is a small-data engine).")
    eager = config.compile and resolve_device(config.device).type == "cpu"
    # compiled on a GPU, resumed on the CPU, where compiling is refused (inference.runtime): the weights are the same
    if eager:
        config = replace(config, compile=False)
    group = distributed.join(config, resuming=True)
    try:
        data = prepare_data(config)
        _check_same_data(config, data, group)
        trainer = TorchTrainer(config, data, run, progress, group)
        if eager:
            trainer.say("resuming without --compile: it is refused on the CPU")
        state = run.load_state()
        if state is not None:
            trainer.restore(state)
        if trainer.start_epoch >= config.epochs:
            raise ConvnetError(f"{run.path} already finished its {config.epochs} epochs; nothing to resume.")
        if group.main and not run.samples_path.is_file():  # killed before train() got to write it
            _write_samples(trainer, run)
        trainer.say(f"resuming {run.path} after epoch {trainer.start_epoch}")
        result = _fit(trainer, run, group)
        distributed.finish(group)
        return result
    finally:
        distributed.leave(group)


def _check_same_data(config: TrainConfig, data: TrainData, group: distributed.Group) -> None:
    """Under torchrun: stop when the processes read different data (one --data path, other files
    on each machine), which would train each on its own data, or fail in gloo or DDP."""
    if group.active:  # hashing the pixels is for a launch of several processes only
        where = repr(config.data) if config.data else "the data set"
        distributed.check_same(group, _data_facts(data),
                               f"give every process the same data: {where} must hold the same files on every machine")


def _data_facts(data: TrainData) -> dict[str, str]:
    """What every process of a launch must see alike, a few words each, in the order a difference is named."""
    classes = data.train.classes
    facts = {
        "classes": f"{len(classes)} ({_cut(', '.join(classes))})",
        "image shape": "x".join(map(str, data.train.image_shape)),
        "images": f"{len(data.train)} training and {len(data.val) if data.val is not None else 'no'} validation",
    }
    for name, split in (("training", data.train), ("validation", data.val)):
        if split is not None:
            facts[f"{name} labels"] = _digest(split.labels)
        # a streamed split's pixels stay on disk: reading them all would be an epoch's work
        if isinstance(split, Dataset):
            facts[f"{name} pixels"] = _digest(split.images)
    return facts


def _cut(text: str) -> str:
    """`text`, or its start and a digest of the whole where it is too long to read in a sentence."""
    return text if len(text) <= FACT_CHARS else f"{text[:FACT_CHARS]}... (hash {_digest(text.encode())})"


def _digest(data: bytes | torch.Tensor) -> str:
    """A short hash of bytes, or of a tensor's values."""
    if isinstance(data, torch.Tensor):
        data = data.detach().cpu().contiguous().numpy()
    return hashlib.blake2b(data, digest_size=6).hexdigest()


def _engine(config: TrainConfig, data: TrainData, run: RunFolder, progress: bool,
            group: distributed.Group) -> EpochLoop:
    if group.active:
        return TorchTrainer(config, data, run, progress, group)  # distributed.join refused other engines
    return ENGINES[config.engine](config, data, run, progress)


def _create_run(config: TrainConfig, group: distributed.Group) -> RunFolder:
    """Rank 0 makes the run folder; every rank learns its path, or that it could not be made."""
    if not group.active:
        return RunFolder.create(config)
    run = distributed.on_rank_0(group, lambda: RunFolder.create(config),
                                "Rank 0 could not make the run folder (its error says why); no rank trained.")
    path = distributed.broadcast_text(group, str(run.path) if run else "")
    return run or RunFolder(Path(path))


def _write_start(trainer: EpochLoop, run: RunFolder, plan: budget.BudgetPlan | None) -> None:
    if plan is not None:
        run.write_config(trainer.config)  # a resumed run follows the plan
        budget.write_plan(run.plan_path, plan)
    _write_samples(trainer, run)


def _fit(trainer: EpochLoop, run: RunFolder, group: distributed.Group) -> RunResult:
    metrics = trainer.fit()
    if group.main:
        plot_curves(trainer.history, run.curves_path)
    return RunResult(run.path, list(trainer.history), metrics)


def _write_samples(trainer: EpochLoop, run: RunFolder) -> None:
    images, names = preview(trainer.data.train, SAMPLES, trainer.config.seed)
    save_image_grid(images, names, run.samples_path, title="training images (a seeded shuffle)")
