"""Recipes: named presets of model, optimizer, schedule, augmentation and epochs.

`--recipe NAME` starts from the preset; any flag given on the command line overrides its field.
Each preset says where its settings come from and what it measured (benchmarks/results/).
"""
from __future__ import annotations

from dataclasses import replace

from convnet.engine.config import TrainConfig
from convnet.errors import ConfigError

RECIPES: dict[str, TrainConfig] = {
    # The tutorial exactly: its CNN, Adam 1e-3, cross-entropy, 10 epochs, batch 32, pixels / 255.
    "tutorial": TrainConfig(recipe="tutorial"),
}


def list_recipes() -> list[str]:
    return list(RECIPES)


def recipe_config(name: str, **overrides) -> TrainConfig:
    """The preset `name` with `overrides` (field=value) applied."""
    if name not in RECIPES:
        raise ConfigError(f"Unknown recipe {name!r}; choose one of: {', '.join(RECIPES)}.")
    return replace(RECIPES[name], **overrides)
