"""Which images `convnet evaluate` scores: the named split of the given data, or of the run's own data."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from convnet.data.dataset import Dataset
from convnet.data.sources import load_dataset
from convnet.data.streaming import in_memory
from convnet.errors import DataError
from convnet.formats import ModelInfo
from convnet.training.prepare import prepare_data
from convnet.training.run_folder import RunFolder


def evaluation_split(checkpoint: str | Path, info: ModelInfo, data: str | None, split: str) -> Dataset:
    """The images to evaluate, at the model's size and channels.

    With `data`, its `split` (a flat image folder is one split: all of it). Without, the data of
    the run that wrote the checkpoint: its carved validation split or remaining training images
    are rebuilt from config.json exactly as training cut them.
    """
    if data is not None:
        return load_dataset(data, split, image_size=info.input_size, channels=info.in_chans)
    path = Path(checkpoint)
    run_dir = path if path.is_dir() else path.parent
    if not (run_dir / "config.json").is_file():
        if split != "test":
            raise DataError(f"Without --data, --split {split} needs the run folder's config.json next to the model; "
                            "pass --data.")
        return load_dataset(None, "test", image_size=info.input_size, channels=info.in_chans)
    config = RunFolder.open(run_dir).read_config()
    if split == "test":
        return load_dataset(config.data, "test", image_size=info.input_size, channels=info.in_chans)
    prepared = prepare_data(replace(config, image_size=info.input_size, channels=info.in_chans))
    if split == "train":
        return in_memory(prepared.train, config.memory_budget_mb)
    if prepared.val is None:
        raise DataError("The run had no validation split (--val-split 0); evaluate --split test or pass --data.")
    return in_memory(prepared.val, config.memory_budget_mb)
