"""`train` and `resume`: the entry points the CLI and the Python API call.

They prepare the data (engine.prepare), make or open the run folder (engine.run_folder), pick
the engine the config names (ENGINES) and run the shared epoch loop (engine.loop).
"""
from __future__ import annotations

from pathlib import Path

from convnet.data.batches import preview
from convnet.engine.config import TrainConfig
from convnet.engine.loop import EpochLoop, RunResult, TrainingDiverged
from convnet.engine.prepare import prepare_data
from convnet.engine.run_folder import RunFolder
from convnet.engine.scratch_fit import ScratchTrainer
from convnet.engine.torch_trainer import TorchTrainer
from convnet.errors import ConvnetError
from convnet.viz.grid import save_image_grid
from convnet.viz.plots import plot_curves

__all__ = ["ENGINES", "RunResult", "TrainingDiverged", "resume", "train"]

ENGINES: dict[str, type[EpochLoop]] = {"torch": TorchTrainer, "scratch": ScratchTrainer}
SAMPLES = 25  # images in samples.png


def train(config: TrainConfig, progress: bool = True) -> RunResult:
    """Train a model as `config` says and write its run folder (see engine.run_folder)."""
    run = RunFolder.create(config)  # first: a taken name or a bad --runs-dir stops before any work
    try:
        trainer = ENGINES[config.engine](config, prepare_data(config), run, progress)
        _write_samples(trainer, run)
    except BaseException:
        run.discard()  # nothing trained (unreadable data, a setting the model refuses, Ctrl-C): leave no half-made folder
        raise
    return _fit(trainer, run)


def resume(run_dir: str | Path, progress: bool = True) -> RunResult:
    """Continue a run after Ctrl-C or a kill; it ends as the uninterrupted run would have."""
    run = RunFolder.open(run_dir)
    config = run.read_config()
    if config.engine != "torch":
        raise ConvnetError("Runs of the scratch engine cannot be resumed; start the run again (it is a small-data engine).")
    trainer = TorchTrainer(config, prepare_data(config), run, progress)
    state = run.load_state()
    if state is not None:
        trainer.restore(state)
    if trainer.start_epoch >= config.epochs:
        raise ConvnetError(f"{run.path} already finished its {config.epochs} epochs; nothing to resume.")
    if not run.samples_path.is_file():  # killed before train() got to write it
        _write_samples(trainer, run)
    trainer.say(f"resuming {run.path} after epoch {trainer.start_epoch}")
    return _fit(trainer, run)


def _fit(trainer: EpochLoop, run: RunFolder) -> RunResult:
    metrics = trainer.fit()
    plot_curves(trainer.history, run.curves_path)
    return RunResult(run.path, list(trainer.history), metrics)


def _write_samples(trainer: EpochLoop, run: RunFolder) -> None:
    images, names = preview(trainer.data.train, SAMPLES, trainer.config.seed)
    save_image_grid(images, names, run.samples_path, title="training images (a seeded shuffle)")
