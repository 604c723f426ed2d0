"""Argument helpers shared by several commands."""
from __future__ import annotations

import argparse
import json
import re

from convnet.errors import ConfigError
from convnet.formats import parse_scalar


def parse_shape(text: str) -> tuple[int, ...]:
    """'3x32x32' -> (3, 32, 32); '64' -> (64,)."""
    try:
        dims = tuple(int(d) for d in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape like 3x32x32 or 64x64") from None
    if any(d < 1 for d in dims):
        raise argparse.ArgumentTypeError(f"{text!r} has a dimension below 1")
    return dims


def image_size(text: str) -> tuple[int, int]:
    """'32' -> (32, 32); '48x64' -> (48, 64)."""
    dims = parse_shape(text)
    if len(dims) == 1:
        return (dims[0], dims[0])
    if len(dims) == 2:
        return dims  # type: ignore[return-value]
    raise argparse.ArgumentTypeError(f"{text!r} is not a size like 32 or 48x64")


_UNITS = (("h", 3600.0), ("m", 60.0), ("s", 1.0))


def duration(text: str) -> float:
    """'8m' -> 480.0 seconds; '90s', '1h30m', '2.5m' and plain seconds ('480') too."""
    parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?", text.strip().lower())
    if not text.strip() or parts is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration; write e.g. 8m, 90s, 1h30m or 480 (seconds)")
    seconds = sum(float(v) * unit for v, (_, unit) in zip(parts.groups(), _UNITS, strict=True) if v)
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not longer than 0 seconds")
    return seconds


def model_args(pairs: list[str] | None) -> dict:
    """['width=32', 'widths=16,32'] -> {'width': 32, 'widths': [16, 32]}; values parse as int, float
    or text, and a value with commas as a list of them."""
    out: dict = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--model-arg {pair!r} is not KEY=VALUE; write e.g. --model-arg width=32.")
        out[key] = [parse_scalar(v) for v in value.split(",")] if "," in value else parse_scalar(value)
    return out


def to_json(value) -> str:
    """`value` as one line of JSON, its floats to 6 significant digits: float32 holds about 7, so
    more digits are noise (0.4050000011920929 for 0.405). NaN and infinity are not JSON: ValueError."""
    return json.dumps(_rounded(value), allow_nan=False)


def _rounded(value):
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    return value


def add_data_argument(p: argparse.ArgumentParser, help_extra: str = "") -> None:
    p.add_argument(
        "--data",
        default=None,
        help="cifar10 (default; downloaded on first use), fashion-mnist, sample (the embedded CIFAR-10 sample), "
        "or a path: cifar-10-python.tar.gz, cifar-10-batches-py/, a folder of IDX files, or an image folder "
        "ROOT/<class>/ or ROOT/{train,val,test}/<class>/" + help_extra,
    )
