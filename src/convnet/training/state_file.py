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
import math
import reprlib
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from convnet.checks import first_mismatch, is_int
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
            if not (isinstance(key, str) or is_int(key)):
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
        raise CheckpointError(f"{path} is a safetensors file but not a convnet resume state (no '{STATE_FORMAT}' "
                              "metadata); start a new run.")
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
        with warnings.catch_warnings():  # torch warns about a foreign pickle protocol above our one sentence
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  (torch raises many kinds for a foreign or hostile file)
        raise CheckpointError(f"{path} cannot be read safely ({type(e).__name__}: it holds more than tensors and plain "
                              "data); start a new run.") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a training state; start a new run.")
    return state


# --- whether a state fits the run that resumes from it -------------------------------------
# A state that reads cleanly may still not fit: edited, from another run, or crafted. Each check
# compares a saved part with the live object it is about to be loaded into, before torch loads
# it, and raises ValueError naming the first difference in a few words; whatever passes loads
# and steps like a state this version wrote (nothing fails later, at the first step, with a
# traceback, and nothing trains on from nonsense).


def check_tensors(what: str, saved, live: dict[str, torch.Tensor]) -> None:
    """`saved` holds exactly the tensors of `live` (a state_dict), each of its shape and kind of number.

    Raises:
        ValueError: the first tensor missing, extra, or of the wrong shape or kind.
    """
    if not isinstance(saved, dict):
        raise ValueError(f"its {what} is a {type(saved).__name__}, not a set of named tensors")
    found = first_mismatch({name: getattr(value, "shape", None) for name, value in saved.items()},
                           {name: t.shape for name, t in live.items()})
    if found is not None and found[0] == "missing":
        raise ValueError(f"its {what} lacks the tensor {found[1]!r}")
    if found is not None and found[0] == "extra":
        raise ValueError(f"its {what} has a tensor {reprlib.repr(found[1])} that the run's model does not have")
    for name, want in live.items():  # shapes, and the kind of number (a non-tensor is named as such)
        _check_tensor(f"{what} tensor {name!r}", saved[name], want.shape, want.is_floating_point())


def check_optimizer(saved, optimizer: torch.optim.Optimizer) -> None:
    """`saved` is a state_dict that `optimizer` can load and step from.

    The same parameter groups (same keys, each value of the live value's type), and for each
    parameter either no state or exactly the buffers the optimizer keeps, each of the
    parameter's shape and floating-point (`step`: one number).

    Raises:
        ValueError: the first thing that differs.
    """
    live = optimizer.state_dict()
    if not isinstance(saved, dict) or set(saved) != set(live):
        raise ValueError(f"its optimizer state is {_what_is(saved)}, not the state of the run's "
                         f"{type(optimizer).__name__} optimizer")
    groups = saved["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(live["param_groups"]):
        count = (f"{len(groups)} parameter groups" if isinstance(groups, list)
                 else f"parameter groups that are {_what_is(groups)}")
        raise ValueError(f"its optimizer has {count} where the run's has {len(live['param_groups'])}")
    shapes, group_of = {}, {}
    for i, (group, want, params) in enumerate(zip(groups, live["param_groups"], optimizer.param_groups, strict=True)):
        _check_group(i, group, want)
        for index, param in zip(want["params"], params["params"], strict=True):
            shapes[index], group_of[index] = param.shape, group
    state = saved["state"]
    if not isinstance(state, dict):
        raise ValueError(f"its optimizer's per-parameter state is {_what_is(state)}")
    for index, buffers in state.items():
        if not is_int(index) or index not in shapes:
            raise ValueError(f"its optimizer keeps state for a parameter {reprlib.repr(index)} "
                             "that the run does not have")
        want = _buffers(optimizer, group_of[index])
        if not isinstance(buffers, dict) or set(buffers) != want:
            names = sorted(map(str, buffers)) if isinstance(buffers, dict) else _what_is(buffers)
            raise ValueError(f"its optimizer state for parameter {index} holds {reprlib.repr(names)}, "
                             f"not {sorted(want)}")
        for name, value in buffers.items():
            shape = () if name == "step" else shapes[index]
            _check_tensor(f"optimizer's {name} for parameter {index}", value, shape, floating=True)


def _check_group(i: int, group, want: dict) -> None:
    if not isinstance(group, dict):
        raise ValueError(f"its optimizer's parameter group {i} is {_what_is(group)}")
    missing, extra = [k for k in want if k not in group], [k for k in group if k not in want]
    if missing or extra:
        raise ValueError(f"its optimizer's parameter group {i} "
                         + (f"lacks {missing[0]!r}" if missing else f"has an unknown setting {reprlib.repr(extra[0])}"))
    if group["params"] != want["params"]:
        raise ValueError(f"its optimizer's parameter group {i} holds other parameters than the run's")
    for key, value in want.items():
        if not _fits(group[key], value):
            raise ValueError(f"its optimizer's {key} in parameter group {i} is {_what_is(group[key])}, where the run's "
                             f"is {_what_is(value)}")


def _buffers(optimizer: torch.optim.Optimizer, group: dict) -> set[str]:
    """The state `optimizer` keeps for each parameter once it has stepped (torch's names)."""
    if isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
        return {"step", "exp_avg", "exp_avg_sq"} | ({"max_exp_avg_sq"} if group["amsgrad"] else set())
    return {"momentum_buffer"}  # torch's SGD and training.optim's MuonSGD


def _check_tensor(label: str, value, shape: tuple, floating: bool) -> None:
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"its {label} is {_what_is(value)}, not a tensor")
    if value.shape != shape:
        raise ValueError(f"its {label} has shape {tuple(value.shape)} where the run's has {tuple(shape)}")
    if value.is_floating_point() != floating:
        raise ValueError(f"its {label} holds {value.dtype} values where the run's holds "
                         f"{'floating-point' if floating else 'integer'} ones")


def _fits(value, like) -> bool:
    """`value` is of the kind of setting `like` is: the same of bool, text or None, a finite number
    for a number (int and float alike), and element by element for a list or tuple (a tuple,
    such as Adam's betas, comes back from JSON as a list)."""
    if isinstance(like, (list, tuple)):
        return (isinstance(value, (list, tuple)) and len(value) == len(like)
                and all(_fits(v, w) for v, w in zip(value, like, strict=True)))
    if is_int(like) or isinstance(like, float):
        return (is_int(value) or isinstance(value, float)) and math.isfinite(value)
    return type(value) is type(like)


def _what_is(value) -> str:
    """A few words for a value from a hostile file: its type, and the value itself cut short."""
    return f"{reprlib.repr(value)} ({type(value).__name__})"
