"""The model file's format name and its reader, kept free of torch so that every reader (the
torch engine, the NumPy engine, the server) shares one spelling and one set of checks.

Layout of model.safetensors: see engine/checkpoint.py.
"""
from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError, safe_open

from convnet.errors import CheckpointError

MODEL_FORMAT = "convnet.model/1"


def read_model_arrays(path: str | Path, framework: str) -> tuple[dict, dict, Path]:
    """Read a model file's tensors and its "convnet" metadata.

    Args:
        path: a model.safetensors file, or the run folder holding one.
        framework: "pt" for torch tensors, "np" for NumPy arrays.
    Returns:
        (tensors by name, metadata dict, the file's path).
    Raises:
        CheckpointError: missing, unreadable, or not a convnet model; one sentence.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise CheckpointError(f"No model file at {path}; pass the model.safetensors written by `convnet train` (or its run folder).")
    try:
        with safe_open(str(path), framework=framework) as f:
            meta = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({e}); pass a model.safetensors written by `convnet train`.") from None
    if meta.get("format") != MODEL_FORMAT or "convnet" not in meta:
        raise CheckpointError(f"{path} is a safetensors file but not a convnet model (no '{MODEL_FORMAT}' metadata); pass one written by `convnet train`.")
    try:
        info = json.loads(meta["convnet"])
    except json.JSONDecodeError:
        raise CheckpointError(f"{path} has damaged convnet metadata; pass a model.safetensors written by `convnet train`.") from None
    return tensors, info, path
