"""Checks of plain values that every layer shares: written once, so that every reader of a config,
a model file or a resume state refuses the same things.

Imports nothing of convnet's (it sits below `formats`, which uses it): each check answers what
it found, and its caller raises its own error in its own words.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal


def is_int(v: Any) -> bool:
    """A whole number, and not a bool: JSON's `true` and Python's `True` are ints to `isinstance`,
    but never a count or an index."""
    return isinstance(v, int) and not isinstance(v, bool)


def first_mismatch(got: Mapping[str, Any],
                   want: Mapping[str, Any]) -> tuple[Literal["missing", "extra", "shape"], str] | None:
    """The first way the named tensor shapes `got` differ from `want` (name -> shape tuple).

    Returns:
        ("missing", name): the first of `want`'s names (in its order) that `got` lacks; else
        ("extra", name): the first of `got`'s names that `want` lacks; else
        ("shape", name): the first name (in `want`'s order) whose shape differs; else None.
    """
    missing = next((name for name in want if name not in got), None)
    if missing is not None:
        return "missing", missing
    extra = next((name for name in got if name not in want), None)
    if extra is not None:
        return "extra", extra
    other = next((name for name, shape in want.items() if got[name] != shape), None)
    return ("shape", other) if other is not None else None
