"""The data a run trains and validates on, as its config says."""
from __future__ import annotations

from convnet.data.dataset import channel_stats, limit_dataset, split_dataset
from convnet.data.sources import available_splits, load_dataset
from convnet.engine.config import TrainConfig
from convnet.engine.loop import TrainData


def prepare_data(config: TrainConfig) -> TrainData:
    """Load the training data and its validation split (the data's own, or carved from train)."""
    size, chans = config.image_size, config.channels
    train = load_dataset(config.data, "train", image_size=size, channels=chans)
    # Every later split is converted to the training images' size and channels.
    size, chans = tuple(train.images.shape[2:]), train.images.shape[1]
    if "val" in available_splits(config.data):
        val = load_dataset(config.data, "val", image_size=size, channels=chans)
    elif config.val_split > 0:
        train, val = split_dataset(train, config.val_split, config.seed)
    else:
        val = None
    if config.limit is not None:
        train = limit_dataset(train, config.limit, config.seed)
    if config.normalize == "unit":
        mean, std = (0.0,) * chans, (1.0,) * chans
    else:
        mean, std = channel_stats(train.images)
        std = tuple(max(v, 1e-3) for v in std)
    return TrainData(train, val, mean, std)
