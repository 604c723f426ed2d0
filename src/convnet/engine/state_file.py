"""The resume state file: nested training state in safetensors, with no pickle anywhere.

Format ("convnet.state/1"): a safetensors file whose tensors are every tensor of the state,
named by where they sit ("model/conv1.weight", "optimizer/state/0/exp_avg", ...), and whose
metadata holds two strings:

    "format":  "convnet.state/1"
    "convnet": JSON of the state with each tensor replaced by {"$tensor": its name} and each
               dict written as {"$dict": [[key, value], ...]}, so integer keys (the optimizer's
               parameter indexes) survive.

Reading it parses JSON and tensors only: a hostile file can be refused, never run. Runs written
before this format kept their state in `state.pt` (torch.save); `read_legacy_state` still reads
those, with torch's weights-only unpickler, which refuses anything but tensors and plain data.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from convnet.errors import CheckpointError
from convnet.files import atomic_write

STATE_FORMAT = "convnet.state/1"
_SCALARS = (str, int, float, bool, type(None))


def _encode(value, name: str, tensors: dict[str, torch.Tensor]):
    if isinstance(value, torch.Tensor):
        tensors[name] = value.detach().to("cpu").clone().contiguous()
        return {"$tensor": name}
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise TypeError(f"state key {key!r} at {name} is not text or an integer")
        return {"$dict": [[key, _encode(v, f"{name}/{key}", tensors)] for key, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return [_encode(v, f"{name}/{i}", tensors) for i, v in enumerate(value)]
    if isinstance(value, _SCALARS):
        return value
    raise TypeError(f"state value at {name} is a {type(value).__name__}, which the state file does not hold")


def _decode(value, tensors: dict[str, torch.Tensor]):
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if isinstance(value, dict):
        if set(value) == {"$tensor"} and isinstance(value["$tensor"], str) and value["$tensor"] in tensors:
            return tensors[value["$tensor"]]
        pairs = value.get("$dict")
        if set(value) == {"$dict"} and isinstance(pairs, list) and all(
            isinstance(p, list) and len(p) == 2 and isinstance(p[0], (str, int)) for p in pairs
        ):
            return {key: _decode(v, tensors) for key, v in pairs}
        raise ValueError("an object that is neither a tensor reference nor a dict")
    if isinstance(value, _SCALARS):
        return value
    raise ValueError(f"a {type(value).__name__}")


def save_state(path: Path, state: dict) -> None:
    """Write `state` (dicts, lists, tensors and JSON scalars) through a temporary file."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = json.dumps(_encode(state, "", tensors))
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"format": STATE_FORMAT, "convnet": skeleton}))


def read_state(path: Path) -> dict:
    """The state `save_state` wrote.

    Raises:
        CheckpointError: not a readable convnet state file; one sentence.
    """
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable state file ({e}); start a new run.") from None
    if meta.get("format") != STATE_FORMAT or "convnet" not in meta:
        raise CheckpointError(f"{path} is a safetensors file but not a convnet resume state (no '{STATE_FORMAT}' metadata); start a new run.")
    try:
        state = _decode(json.loads(meta["convnet"]), tensors)
    except (ValueError, RecursionError) as e:
        raise CheckpointError(f"{path} has damaged state metadata ({e}); start a new run.") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a training state; start a new run.")
    return state


def read_legacy_state(path: Path) -> dict:
    """A `state.pt` written by convnet before the state file, read without running any code."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  (torch raises many kinds for a foreign or hostile file)
        raise CheckpointError(f"{path} cannot be read safely ({type(e).__name__}: it holds more than tensors and plain data); start a new run.") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a training state; start a new run.")
    return state
