"""The model file's format name, its reader and its checks, kept free of torch so that every
reader (the torch engine, the NumPy engine, the server) shares one spelling and one set of checks.

Layout of model.safetensors: see inference/model_file.py. A model file is untrusted input: it may
come from a download or a shared drive. safetensors itself never runs code and refuses a header
whose tensors do not exactly cover the file; on top of that, `read_model_arrays` refuses, in one
sentence, anything that would give a traceback or silently wrong (NaN) output later: metadata
with missing, extra or mistyped keys, a mean/std that does not fit the channels, weights that
are not finite float32. What needs the built model (the model name and arguments, tensor names
and shapes) is checked by `check_weights_match` once the reader has built it.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open

from convnet.checks import first_mismatch, is_int
from convnet.errors import CheckpointError

MODEL_FORMAT = "convnet.model/1"
SUPPORTED_CHANNELS = (1, 3)  # what data.images.pil_to_tensor converts images to
# Far above any model convnet trains (ResNet-18 at width 64 is 45 MB), far below what would
# exhaust a machine's memory once the NumPy engine holds the weights in float64.
MAX_MODEL_BYTES = 4 * 1024**3
# One 4096x4096 RGB image is 50 MB as uint8 and 200 MB as model input: a larger side is not a
# model convnet trained, and predicting with it would allocate that much per image.
MAX_INPUT_SIDE = 4096
_DO = "pass a model.safetensors written by `convnet train`"


@dataclass(frozen=True)
class ModelInfo:
    """The "convnet" metadata of a model file: what a reader needs besides the weights."""

    model: str  # registry name
    model_args: dict  # the architecture's own arguments (e.g. {"arch": "c32-p-f-d64"})
    classes: tuple[str, ...]
    in_chans: int
    input_size: tuple[int, int]  # (H, W)
    mean: tuple[float, ...]  # per channel, on the 0..1 scale
    std: tuple[float, ...]
    data_source: str = ""
    metrics: dict = field(default_factory=dict)  # final metrics of the run that wrote it

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_dict(cls, d: dict) -> ModelInfo:
        d = dict(d)
        d["classes"] = tuple(d["classes"])
        d["input_size"] = tuple(d["input_size"])
        d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
        return cls(**d)


# The keys of the "convnet" metadata, in ModelInfo's order.
MODEL_INFO_KEYS = tuple(f.name for f in fields(ModelInfo))


def read_model_arrays(path: str | Path, framework: str) -> tuple[dict, dict, Path]:
    """Read a model file's tensors and its "convnet" metadata, both checked (see the module doc).

    Args:
        path: a model.safetensors file, or the run folder holding one.
        framework: "pt" for torch tensors, "np" for NumPy arrays.
    Returns:
        (tensors by name, metadata dict, the file's path).
    Raises:
        CheckpointError: missing, unreadable, not a convnet model, or failing a check; one sentence.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise CheckpointError(
            f"No model file at {path}; pass the model.safetensors written by `convnet train` (or its run folder)."
        )
    if path.stat().st_size > MAX_MODEL_BYTES:
        raise CheckpointError(
            f"{path} is larger than {MAX_MODEL_BYTES // 1024**3} GiB, far more than any convnet model; {_DO}."
        )
    # The header is checked before any tensor is read: a bad file costs nothing to refuse.
    meta, dtypes = _read(
        path, "np", lambda f: (f.metadata() or {}, {name: f.get_slice(name).get_dtype() for name in f.keys()})
    )
    info = _parse_info(meta, path)
    check_model_info(info, path)
    _check_dtypes(dtypes, path)
    tensors = _read(path, framework, lambda f: {name: f.get_tensor(name) for name in f.keys()})
    for name, t in tensors.items():
        # np.asarray views a CPU torch tensor without a copy, so one check serves both frameworks.
        values = np.asarray(t)
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            raise CheckpointError(
                f"{path} has NaN or infinite values in its tensor '{name}', "
                f"which would make every prediction NaN; {_DO}."
            )
    return tensors, info, path


def _read(path: Path, framework: str, take: Callable[[Any], Any]) -> Any:
    try:
        with safe_open(str(path), framework=framework) as f:
            return take(f)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({e}); {_DO}.") from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    """json's object hook: a key given twice would otherwise silently keep its last value."""
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"the key {_show(key)} appears twice")
        out[key] = value
    return out


def _parse_info(meta: dict, path: Path) -> dict:
    if meta.get("format") != MODEL_FORMAT or "convnet" not in meta:
        raise CheckpointError(
            f"{path} is a safetensors file but not a convnet model (no '{MODEL_FORMAT}' metadata); {_DO}."
        )
    try:
        info = json.loads(meta["convnet"], object_pairs_hook=_no_duplicates)
    except ValueError as e:  # JSONDecodeError, or a key given twice
        raise CheckpointError(f"{path} has damaged convnet metadata ({e}); {_DO}.") from None
    except RecursionError:  # "[[[[...": the parser gives up long before convnet's own nesting depth
        raise CheckpointError(f"{path} has convnet metadata nested far too deeply to be convnet's; {_DO}.") from None
    if not isinstance(info, dict):
        raise CheckpointError(f"{path} has convnet metadata that is not a JSON object; {_DO}.")
    return info


def _show(value: Any, limit: int = 60) -> str:
    """A value as it appears in the file, cut short: a hostile file cannot flood the message."""
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_number(v: Any) -> bool:
    return (is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _is_scalar(v: Any) -> bool:
    return isinstance(v, (str, bool)) or _is_number(v)


def _is_arg_value(v: Any) -> bool:
    """A model argument: a string, bool, finite number, or a flat list of those (airnet's widths)."""
    return _is_scalar(v) or (isinstance(v, list) and all(_is_scalar(x) for x in v))


def parse_scalar(text: str) -> int | float | str:
    """A value written as text, as an int, else a float, else the text itself: how a model argument
    given on the command line (--model-arg width=32) and a history.csv cell are read."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            continue
    return text


def _per_channel(values: Any, in_chans: int, positive: bool) -> bool:
    return (
        isinstance(values, list)
        and len(values) == in_chans
        and all(_is_number(v) and (v > 0 or not positive) for v in values)
    )


def check_model_info(info: dict, path: str | Path) -> None:
    """Check the "convnet" metadata: exactly the documented keys, each of the documented type.

    Raises:
        CheckpointError: naming the first key that is missing, unknown or wrong, in one sentence.
    """
    missing = [k for k in MODEL_INFO_KEYS if k not in info]
    if missing:
        raise CheckpointError(f"{path} has convnet metadata without {', '.join(map(repr, missing))}; {_DO}.")
    extra = sorted(k for k in info if k not in MODEL_INFO_KEYS)
    if extra:
        raise CheckpointError(
            f"{path} has convnet metadata with unknown keys {', '.join(_show(k) for k in extra)}; {_DO}."
        )
    chans = info["in_chans"]
    expect = {
        "model": (isinstance(info["model"], str) and info["model"] != "", "a model name"),
        "model_args": (
            isinstance(info["model_args"], dict) and all(_is_arg_value(v) for v in info["model_args"].values()),
            "an object whose values are strings, numbers, booleans or lists of them",
        ),
        "classes": (
            isinstance(info["classes"], list)
            and len(info["classes"]) > 0
            and all(isinstance(c, str) and c != "" for c in info["classes"])
            and len(set(info["classes"])) == len(info["classes"]),
            "a non-empty list of distinct class names",
        ),
        "in_chans": (is_int(chans) and chans in SUPPORTED_CHANNELS, f"one of {SUPPORTED_CHANNELS}"),
        "input_size": (
            isinstance(info["input_size"], list)
            and len(info["input_size"]) == 2
            and all(is_int(s) and 1 <= s <= MAX_INPUT_SIDE for s in info["input_size"]),
            f"[height, width] between 1 and {MAX_INPUT_SIDE}",
        ),
        "mean": (_per_channel(info["mean"], chans, positive=False), f"{_show(chans)} finite numbers, one per channel"),
        "std": (
            _per_channel(info["std"], chans, positive=True),
            f"{_show(chans)} positive finite numbers, one per channel",
        ),
        "data_source": (isinstance(info["data_source"], str), "a string"),
        "metrics": (isinstance(info["metrics"], dict), "an object"),
    }
    for key in MODEL_INFO_KEYS:  # in the documented order, so the first bad key is named
        ok, should_be = expect[key]
        if not ok:
            raise CheckpointError(
                f"{path} has a bad '{key}' in its metadata ({_show(info[key])}; it must be {should_be}); {_DO}."
            )


def _check_dtypes(dtypes: dict[str, str], path: Path) -> None:
    """Weights are float32 (what `save_model` writes; half precision would change every output);
    integers only as BatchNorm's step counter."""
    for name, dtype in dtypes.items():
        if dtype == "F32" or (dtype == "I64" and name.endswith("num_batches_tracked")):
            continue
        kind = {"F16": "half precision", "BF16": "bfloat16", "F64": "double precision"}.get(dtype, "not float32")
        raise CheckpointError(
            f"{path} stores its tensor {_show(name)} as {dtype} ({kind}); convnet model weights are float32, so {_DO}."
        )


def check_weights_match(
    path: str | Path,
    expected: dict[str, tuple[int, ...]],
    tensors: dict,
    model: str,
    num_classes: int,
    in_chans: int,
) -> None:
    """Check a file's tensors against the state dict of the model its metadata describes.

    Args:
        path: the model file, for the message.
        expected: tensor name -> shape of the built model's state dict, in its order.
        tensors: the file's tensors (torch or NumPy: only `.shape` is read).
        model: the registry name, for the message.
        num_classes, in_chans: from the metadata; a head or a first layer that disagrees with
            them is named as such rather than as a bare shape mismatch.
    Raises:
        CheckpointError: naming the first missing, unexpected or mis-shaped tensor, in one sentence.
    """
    got = {name: tuple(np.shape(t)) for name, t in tensors.items()}
    mismatch = f"{path} does not match the '{model}' model its metadata describes"
    # The head is the last dense layer: the last 2-D weight (its rows are the classes).
    heads = [n for n, s in expected.items() if len(s) == 2 and s[0] == num_classes]
    if heads and heads[-1] in got and len(got[heads[-1]]) == 2 and got[heads[-1]][0] != num_classes:
        raise CheckpointError(
            f"{mismatch}: it lists {num_classes} classes "
            f"but its output layer '{heads[-1]}' has {got[heads[-1]][0]}; {_DO}."
        )
    # The first convolution's weight is (out, in_chans, kh, kw).
    first = next((n for n, s in expected.items() if len(s) == 4), None)
    if first is not None and first in got and len(got[first]) == 4 and got[first][1] != expected[first][1] == in_chans:
        raise CheckpointError(
            f"{mismatch}: it gives in_chans={in_chans} "
            f"but its first layer '{first}' takes in_chans={got[first][1]}; {_DO}."
        )
    found = first_mismatch(got, {name: tuple(shape) for name, shape in expected.items()})
    if found is None:
        return
    kind, name = found
    if kind == "missing":
        raise CheckpointError(f"{mismatch}: it lacks the tensor '{name}'; {_DO}.")
    if kind == "extra":
        raise CheckpointError(f"{mismatch}: it has a tensor {_show(name)} that the model does not; {_DO}.")
    raise CheckpointError(
        f"{mismatch} (from its classes, channels, input size and arguments): its tensor '{name}' has shape "
        f"{list(got[name])} where the model needs {list(expected[name])}; {_DO}."
    )
