"""Opening any model file convnet can run, by its kind: what `predict`, `evaluate` and a server call.

    model.safetensors (or its run folder)   inference.model_file.load_checkpoint -> Classifier
    *.onnx (from `convnet export`)          inference.onnx_model.load_onnx -> OnnxClassifier (onnxruntime)

Both answer `info`, `classes`, `to_input(image)`, `logits(images, batch_size, tta)` and
`predict(images, tta)` alike; only a Classifier has the PyTorch `model` that feature maps and
Grad-CAM need.
"""
from __future__ import annotations

from pathlib import Path

import torch

from convnet.inference.model_file import Classifier, load_checkpoint
from convnet.inference.onnx_model import OnnxClassifier, load_onnx


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
