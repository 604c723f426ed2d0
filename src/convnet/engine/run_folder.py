"""The run folder: what `convnet train` writes, and how `--resume` reads it back.

    runs/<name>/
      config.json        asdict(TrainConfig): everything needed to repeat the run
      history.csv        one row per finished epoch (HISTORY_FIELDS)
      model.safetensors  weights + ModelInfo (engine.checkpoint): evaluate, predict, serve read it
      state.pt           training state after the last finished epoch (model, optimizer,
                         EMA, history), for --resume
      curves.png         accuracy and loss per epoch, train vs validation
      samples.png        25 training images (a seeded shuffle) with their classes

Every file is written through a temporary file and a rename, so a kill at any moment leaves
the previous epoch's files whole.
"""
from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from pathlib import Path

import torch

from convnet.files import atomic_write
from convnet.engine.config import TrainConfig
from convnet.errors import CheckpointError, ConfigError

HISTORY_FIELDS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s")


class RunFolder:
    def __init__(self, path: Path):
        self.path = Path(path)

    config_path = property(lambda self: self.path / "config.json")
    history_path = property(lambda self: self.path / "history.csv")
    model_path = property(lambda self: self.path / "model.safetensors")
    state_path = property(lambda self: self.path / "state.pt")
    curves_path = property(lambda self: self.path / "curves.png")
    samples_path = property(lambda self: self.path / "samples.png")

    @classmethod
    def create(cls, config: TrainConfig) -> RunFolder:
        name = config.name or f"{config.model}-{datetime.now():%Y%m%d-%H%M%S}"
        path = Path(config.runs_dir) / name
        if path.exists() and any(path.iterdir()):
            raise ConfigError(f"The run folder {path} already exists; pick another --name, or continue it with --resume {path}.")
        path.mkdir(parents=True, exist_ok=True)
        run = cls(path)
        text = json.dumps(config.to_dict(), indent=2)
        atomic_write(run.config_path, lambda tmp: Path(tmp).write_text(text + "\n"))
        return run

    def discard(self) -> None:
        """Remove a folder that `create` made for a run that could not start (nothing trained)."""
        self.config_path.unlink(missing_ok=True)
        if not any(self.path.iterdir()):
            self.path.rmdir()

    @classmethod
    def open(cls, path: str | Path) -> RunFolder:
        run = cls(Path(path))
        if not run.config_path.is_file():
            raise CheckpointError(f"{path} is not a run folder (no config.json); pass a folder written by `convnet train`.")
        return run

    def read_config(self) -> TrainConfig:
        try:
            return TrainConfig.from_dict(json.loads(self.config_path.read_text()))
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{self.config_path} is not valid JSON ({e}); restore it or start a new run.") from None

    def write_history(self, history: list[dict]) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(history)
        atomic_write(self.history_path, lambda tmp: Path(tmp).write_text(buf.getvalue()))

    def save_state(self, state: dict) -> None:
        atomic_write(self.state_path, lambda tmp: torch.save(state, tmp))

    def load_state(self) -> dict | None:
        """The saved training state, or None when no epoch has finished yet."""
        if not self.state_path.is_file():
            return None
        try:
            return torch.load(self.state_path, map_location="cpu", weights_only=False)
        except Exception as e:  # a truncated or foreign file: say so rather than dump pickle internals
            raise CheckpointError(f"{self.state_path} cannot be read ({type(e).__name__}); start a new run.") from None


def read_history(path: str | Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
