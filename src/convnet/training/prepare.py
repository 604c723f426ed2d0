"""The data a run trains and validates on, as its config says: in memory, or streamed from disk.

An image folder streams (data.streaming) when `config.stream` asks for it or when its decoded
training split is larger than the memory budget (`config.memory_budget_mb`, by default a fraction
of the available RAM); a DataWarning says which and why. Its validation split then streams too.
Other sources are held in memory.
"""
from __future__ import annotations

import warnings

from convnet.data import image_folder, streaming
from convnet.data.dataset import Dataset, channel_stats, limit_dataset, split_dataset
from convnet.data.sources import available_splits, load_dataset, resolve_source
from convnet.data.streaming import StreamedSplit
from convnet.files import size_text
from convnet.training.config import TrainConfig
from convnet.training.loop import TrainData


def prepare_data(config: TrainConfig) -> TrainData:
    """Load the training data and its validation split (the data's own, or carved from train)."""
    train = _load(config, "train", config.image_size, config.channels, stream=config.stream)
    # Every later split is converted to the training images' size and channels, and streams if train does.
    chans, *size = train.image_shape
    streamed = isinstance(train, StreamedSplit)
    if "val" in available_splits(config.data):
        val = _load(config, "val", tuple(size), chans, stream=streamed)
    elif config.val_split > 0:
        train, val = split_dataset(train, config.val_split, config.seed)
    else:
        val = None
    if config.limit is not None:
        train = limit_dataset(train, config.limit, config.seed)
    if config.normalize == "unit":
        mean, std = (0.0,) * chans, (1.0,) * chans
    else:
        mean, std = streaming.sample_stats(train, config.seed) if streamed else channel_stats(train.images)
        std = tuple(max(v, 1e-3) for v in std)
    return TrainData(train, val, mean, std)


def _load(config: TrainConfig, split: str, size: tuple[int, int] | None, chans: int | None,
          stream: bool) -> Dataset | StreamedSplit:
    """One split, streamed when asked or when an image folder's would not fit the memory budget."""
    source = resolve_source(config.data)
    if source.kind != "image-folder":
        if stream and split == "train":
            warnings.warn(f"--stream reads image folders; {config.data or 'cifar10'} is held in memory.",
                          image_folder.DataWarning, stacklevel=3)
        return load_dataset(config.data, split, image_size=size, channels=chans)
    found = image_folder.scan_folder(source.path, split, size, chans)
    budget = streaming.memory_budget(config.memory_budget_mb)
    if not stream and found.decoded_bytes <= budget:
        return image_folder.load_scanned(found)
    if not stream:
        warnings.warn(
            f"The {found.split} images of {source.path} take {size_text(found.decoded_bytes)} decoded, "
            f"over the memory budget of {size_text(budget)}; they are streamed from disk "
            "(--memory-budget-mb sets the budget).",
            image_folder.DataWarning,
            stacklevel=3,
        )
    return streaming.open_streamed(found)
