"""Helpers the tests share: small real data sets written as files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Small arguments for each registered model, so a test can build every one of them cheaply.
LIGHT_ARGS = {"airnet": {"widths": (8, 16)}, "resnet": {"depth": 18, "width": 4}, "spec": {"arch": "c8k5p2-b-p-c16"}}

COLOURS = {"red": 0, "green": 1, "blue": 2}


def write_colour_folder(root: Path, per_class: int, size: int = 24, seed: int = 0) -> Path:
    """ROOT/<red|green|blue>/NNN.png: noisy images whose strongest channel is the class."""
    rng = np.random.default_rng(seed)
    for name, channel in COLOURS.items():
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.integers(0, 120, size=(size, size, 3), dtype=np.uint8)
            img[:, :, channel] = rng.integers(120, 256, size=(size, size), dtype=np.uint8)
            Image.fromarray(img).save(d / f"{i:03d}.png")
    return root


def train_interrupted(monkeypatch: pytest.MonkeyPatch, config, epoch: int) -> None:
    """Train `config` as if Ctrl-C landed as epoch `epoch` (0-based) began: its folder keeps the epochs before it."""
    from convnet.training.torch_trainer import TorchTrainer
    from convnet.training.train import train

    real = TorchTrainer.train_epoch

    def interrupted(self, at, *args, **kwargs):
        if at == epoch:
            raise KeyboardInterrupt
        return real(self, at, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(TorchTrainer, "train_epoch", interrupted)
        with pytest.raises(KeyboardInterrupt):
            train(config, progress=False)
