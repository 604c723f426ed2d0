"""Opening any model file convnet can run, by its kind: what `predict`, `evaluate` and a server call.

    model.safetensors (or its run folder)   engine.checkpoint.load_checkpoint -> Classifier
"""
from __future__ import annotations

from pathlib import Path

import torch

from convnet.engine.checkpoint import Classifier, load_checkpoint


def load_classifier(path: str | Path, device: str | torch.device = "cpu") -> Classifier:
    """The model in `path`, ready to classify images.

    Raises:
        CheckpointError: not a model file convnet can run; one sentence.
    """
    return load_checkpoint(path, device)
