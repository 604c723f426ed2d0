"""The run folder: what `convnet train` writes, and how `--resume` reads it back.

    runs/<name>/
      config.json        asdict(TrainConfig): everything needed to repeat the run
      history.csv        one row per finished epoch (HISTORY_FIELDS)
      model.safetensors  weights + ModelInfo (inference.model_file): evaluate, predict, serve read it
      state.safetensors  training state after the last finished epoch (model, optimizer,
                         EMA, history), for --resume (training.state_file; no pickle). Runs
                         written before it have state.pt instead, which --resume still reads.
      curves.png         accuracy and loss per epoch, train vs validation
      samples.png        25 training images (a seeded shuffle) with their classes

Every file is written through a temporary file and a rename, so a kill at any moment leaves
the previous epoch's files whole. A run takes its folder by creating config.json with O_EXCL:
of two runs started with the same name at once, one gets it and the other stops before writing
anything.
"""
from __future__ import annotations

import csv
import io
import json
import os
from datetime import datetime
from pathlib import Path

from convnet.errors import CheckpointError, ConfigError, ConvnetError
from convnet.files import atomic_write, kind_of
from convnet.inference.run_files import RunFiles
from convnet.training.config import TrainConfig
from convnet.training.state_file import read_legacy_state, read_state, save_state

MAX_CONFIG_BYTES = 1_000_000  # a config.json is a few kB; a larger one is not ours

HISTORY_FIELDS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s")


class RunFolder(RunFiles):
    """A run folder that training creates, writes and resumes (its files' paths: RunFiles)."""

    made_folder = False  # whether `create` made the folder (not found it empty): `discard` removes only what it made

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
            raise ConfigError(f"Cannot make the runs folder {runs} ({e.strerror or e}); "
                              "pick another --runs-dir.") from None
        run = cls(runs / name)
        run.made_folder = cls._claim(run.path)
        try:
            run.write_config(config)  # replaces the claim's empty file
        except BaseException:
            run.discard()
            raise
        return run

    @staticmethod
    def _claim(path: Path) -> bool:
        """Take `path` for a new run: make it (or find it empty) and create its config.json, empty.

        Creating config.json with O_EXCL is the step only one process can win, whoever made the
        folder: a run that arrives between another's mkdir and its config.json finds the file
        there, or loses the race to create it, and stops; it never writes into the other's folder.

        Returns:
            Whether this call made the folder (rather than finding an empty one left by the user).
        """
        taken = ConfigError(f"The run folder {path} already exists; "
                            f"pick another --name, or continue it with --resume {path}.")
        made = True
        try:
            path.mkdir()
        except FileExistsError:
            if not path.is_dir() or path.is_symlink() or any(path.iterdir()):
                raise taken from None
            made = False
        except OSError as e:
            raise ConfigError(f"Cannot make the run folder {path} ({e.strerror or e}); "
                              "pick another --name or --runs-dir.") from None
        try:
            os.close(os.open(path / "config.json", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            raise taken from None
        except OSError as e:
            if made:
                path.rmdir()
            raise ConfigError(f"Cannot write in the run folder {path} ({e.strerror or e}); "
                              "pick another --name or --runs-dir.") from None
        return made

    def write_config(self, config: TrainConfig) -> None:
        text = json.dumps(config.to_dict(), indent=2)
        atomic_write(self.config_path, lambda tmp: Path(tmp).write_text(text + "\n"))

    def discard(self) -> None:
        """Remove what `create` wrote for a run that could not start (nothing trained), and the folder if it made it."""
        for written in (self.config_path, self.samples_path, self.plan_path):
            written.unlink(missing_ok=True)
        if self.made_folder and self.path.is_dir() and not any(self.path.iterdir()):
            self.path.rmdir()

    @classmethod
    def open(cls, path: str | Path) -> RunFolder:
        """The run folder at `path`, every file of it that exists checked to be a regular file.

        Reading a run folder never follows a symbolic link (which could lead anywhere, or to
        another run), and a folder or FIFO where a file belongs would be read from (a FIFO:
        forever) or fail a write after an epoch of work: each is refused here, before any.

        Raises:
            CheckpointError: no config.json, or a file of the run that is not a regular file.
        """
        run = cls(Path(path))
        if kind_of(run.config_path) is None:
            raise CheckpointError(f"{path} is not a run folder (no config.json); "
                                  "pass a folder written by `convnet train`.")
        for file in (run.config_path, run.state_path, run.legacy_state_path, run.model_path, run.history_path,
                     run.curves_path, run.samples_path, run.plan_path):
            kind = kind_of(file)
            if kind not in (None, "a regular file"):
                raise CheckpointError(f"{file} is {kind}, not a regular file as convnet writes it; "
                                      "replace it with the run's own file, or start a new run.")
        return run

    def read_config(self) -> TrainConfig:
        """config.json, every field checked (it may have been edited, or come from anywhere)."""
        if self.config_path.stat().st_size > MAX_CONFIG_BYTES:
            raise CheckpointError(f"{self.config_path} is larger than any config convnet writes; "
                                  "restore it or start a new run.")
        try:
            d = json.loads(self.config_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
            raise CheckpointError(f"{self.config_path} is not valid JSON ({e}); "
                                  "restore it or start a new run.") from None
        try:
            return TrainConfig.from_dict(d)
        except ConvnetError as e:
            raise ConfigError(f"{self.config_path}: {e}") from None

    @staticmethod
    def check_history(rows) -> None:
        """Rows as `write_history` takes them: exactly HISTORY_FIELDS, each a number or None (a resume state's history
        may be edited or crafted).

        Raises:
            ValueError: the first row that is not.
        """
        if not isinstance(rows, list):
            raise ValueError(f"its history is not a list of rows ({type(rows).__name__})")
        for i, row in enumerate(rows, 1):
            if not isinstance(row, dict) or set(row) != set(HISTORY_FIELDS):
                raise ValueError(f"its history row {i} does not have exactly the columns {', '.join(HISTORY_FIELDS)}")
            for key, value in row.items():
                if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                    raise ValueError(f"its history row {i} has a {key} that is not a number ({type(value).__name__})")

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
