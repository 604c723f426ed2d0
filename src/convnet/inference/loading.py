"""Opening any model file convnet can run, by its kind: what `predict`, `evaluate` and a server call.

    model.safetensors (or its run folder)   inference.model_file.load_checkpoint -> Classifier
    *.onnx (from `convnet export`)          inference.onnx_model.load_onnx -> OnnxClassifier (onnxruntime)

Both are a `RunnableModel`: they answer `info`, `classes`, `to_input(image)`,
`logits(images, batch_size, tta)` and `predict(images, tta)` alike; only a Classifier has the
PyTorch `model` that feature maps and Grad-CAM need.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch

from convnet.formats import ModelInfo
from convnet.inference.model_file import Classifier, load_checkpoint
from convnet.inference.onnx_model import OnnxClassifier, load_onnx


class RunnableModel(Protocol):
    """What every model convnet can run answers: a Classifier (PyTorch) and an OnnxClassifier (onnxruntime)."""

    info: ModelInfo  # the model file's metadata: classes, input size, channels, mean and std, metrics

    @property
    def classes(self) -> tuple[str, ...]: ...

    def to_input(self, image) -> torch.Tensor:
        """A path, a Pillow image or a uint8 (C, H, W) tensor -> uint8 (C, H, W) at the model's size."""
        ...

    def logits(self, images: torch.Tensor, batch_size: int = 512, tta: int = 0) -> torch.Tensor:
        """uint8 (N, C, H, W) -> float32 logits (N, num_classes)."""
        ...

    def predict(self, images, tta: int = 0) -> torch.Tensor:
        """Class probabilities (N, num_classes) for a uint8 (N, C, H, W) tensor or a list of images."""
        ...


def load_classifier(path: str | Path, device: str | torch.device = "cpu") -> Classifier | OnnxClassifier:
    """The model in `path`, ready to classify images.

    Args:
        path: a model.safetensors, its run folder, or an .onnx file (run by onnxruntime on the
            CPU whatever `device` says).
    Raises:
        CheckpointError: not a model file convnet can run; one sentence.
        ConfigError: an .onnx file where onnxruntime is not installed (the sentence names the extra).
    """
    if Path(path).suffix.lower() == ".onnx":
        return load_onnx(path)
    return load_checkpoint(path, device)
