"""The run folder: what `convnet train` writes, and how `--resume` reads it back.

    runs/<name>/
      config.json        asdict(TrainConfig): everything needed to repeat the run
      history.csv        one row per finished epoch (HISTORY_FIELDS)
      model.safetensors  weights + ModelInfo (engine.checkpoint): evaluate, predict, serve read it
      state.safetensors  training state after the last finished epoch (model, optimizer,
                         EMA, history), for --resume (engine.state_file; no pickle). Runs
                         written before it have state.pt instead, which --resume still reads.
      curves.png         accuracy and loss per epoch, train vs validation
      samples.png        25 training images (a seeded shuffle) with their classes

Every file is written through a temporary file and a rename, so a kill at any moment leaves
the previous epoch's files whole. The folder itself is made with one mkdir: of two runs started
with the same name at once, one gets it and the other stops before writing anything.
"""
from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from pathlib import Path

from convnet.engine.config import TrainConfig
from convnet.engine.state_file import read_legacy_state, read_state, save_state
from convnet.errors import CheckpointError, ConfigError, ConvnetError
from convnet.files import atomic_write

MAX_CONFIG_BYTES = 1_000_000  # a config.json is a few kB; a larger one is not ours

HISTORY_FIELDS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s")


class RunFolder:
    def __init__(self, path: Path):
        self.path = Path(path)

    config_path = property(lambda self: self.path / "config.json")
    history_path = property(lambda self: self.path / "history.csv")
    model_path = property(lambda self: self.path / "model.safetensors")
    state_path = property(lambda self: self.path / "state.safetensors")
    legacy_state_path = property(lambda self: self.path / "state.pt")
    curves_path = property(lambda self: self.path / "curves.png")
    samples_path = property(lambda self: self.path / "samples.png")

    @classmethod
    def create(cls, config: TrainConfig) -> RunFolder:
        """Make the run's folder (it must not exist, or be empty) and write config.json."""
        name = config.name or f"{config.model}-{datetime.now():%Y%m%d-%H%M%S}"
        runs = Path(config.runs_dir)
        if runs.exists() and not runs.is_dir():
            raise ConfigError(f"--runs-dir {runs} is a file, not a folder; name a folder for the run folders.")
        try:
            runs.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"Cannot make the runs folder {runs} ({e.strerror or e}); pick another --runs-dir.") from None
        path = runs / name
        cls._claim(path)
        run = cls(path)
        text = json.dumps(config.to_dict(), indent=2)
        atomic_write(run.config_path, lambda tmp: Path(tmp).write_text(text + "\n"))
        return run

    @staticmethod
    def _claim(path: Path) -> None:
        """mkdir, which only one process can win; an empty folder left by the user is taken over."""
        taken = ConfigError(f"The run folder {path} already exists; pick another --name, or continue it with --resume {path}.")
        try:
            path.mkdir()
            return
        except FileExistsError:
            if not path.is_dir() or path.is_symlink() or any(path.iterdir()):
                raise taken from None
        except OSError as e:
            raise ConfigError(f"Cannot make the run folder {path} ({e.strerror or e}); pick another --name or --runs-dir.") from None
        try:  # an empty folder: remove it and race for it like a new one
            path.rmdir()
        except OSError:
            pass
        try:
            path.mkdir()
        except OSError:
            raise taken from None

    def discard(self) -> None:
        """Remove a folder that `create` made for a run that could not start (nothing trained)."""
        for written in (self.config_path, self.samples_path):
            written.unlink(missing_ok=True)
        if self.path.is_dir() and not any(self.path.iterdir()):
            self.path.rmdir()

    @classmethod
    def open(cls, path: str | Path) -> RunFolder:
        run = cls(Path(path))
        if not run.config_path.is_file():
            raise CheckpointError(f"{path} is not a run folder (no config.json); pass a folder written by `convnet train`.")
        return run

    def read_config(self) -> TrainConfig:
        """config.json, every field checked (it may have been edited, or come from anywhere)."""
        if self.config_path.stat().st_size > MAX_CONFIG_BYTES:
            raise CheckpointError(f"{self.config_path} is larger than any config convnet writes; restore it or start a new run.")
        try:
            d = json.loads(self.config_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
            raise CheckpointError(f"{self.config_path} is not valid JSON ({e}); restore it or start a new run.") from None
        try:
            return TrainConfig.from_dict(d)
        except ConvnetError as e:
            raise ConfigError(f"{self.config_path}: {e}") from None

    def write_history(self, history: list[dict]) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(history)
        atomic_write(self.history_path, lambda tmp: Path(tmp).write_text(buf.getvalue()))

    def save_state(self, state: dict) -> None:
        save_state(self.state_path, state)
        self.legacy_state_path.unlink(missing_ok=True)  # a resumed old run: its state.pt is now behind

    def load_state(self) -> dict | None:
        """The saved training state, or None when no epoch has finished yet."""
        if self.state_path.is_file():
            return read_state(self.state_path)
        if self.legacy_state_path.is_file():
            return read_legacy_state(self.legacy_state_path)
        return None
