"""Recipes: named presets of model, optimizer, schedule, augmentation and epochs.

`--recipe NAME` starts from the preset; any flag given on the command line overrides its field.
Each preset says where its settings come from and what it measured (benchmarks/results/).
"""
from __future__ import annotations

from dataclasses import replace

from convnet.data.augment import AugmentConfig
from convnet.engine.config import TrainConfig
from convnet.errors import ConfigError

# airbench94 (Keller Jordan, 2024) states its SGD settings per 1024 examples for a summed loss:
# lr 11.5 and weight decay 0.0153, both divided by 1024 * (1 + 1 / (1 - momentum)). Our loss is
# the batch mean, so at batch 1024 and momentum 0.85 the same steps are lr 1.5 and weight decay
# 0.0153 / 1024 (the decay per step, lr * wd, is then airbench's).
_AIRBENCH_LR = 11.5 * 1024 / (1024 * (1 + 1 / (1 - 0.85)))
_AIRBENCH_WD = 0.0153 / 1024

RECIPES: dict[str, TrainConfig] = {
    # The tutorial exactly: its CNN, Adam 1e-3, cross-entropy, 10 epochs, batch 32, pixels / 255.
    "tutorial": TrainConfig(recipe="tutorial"),
    # The same 122,570-parameter network in 4 epochs instead of 10: batches of 128 with a tuned
    # warm-up and linear decay (Goyal et al. 2017), label smoothing 0.1 (Szegedy et al. 2016),
    # per-channel standardisation, alternating flips (airbench). Picked by validation accuracy
    # on the 45,000/5,000 CIFAR-10 split; see benchmarks/results/keras_vs_convnet.json.
    "tutorial-fast": TrainConfig(
        recipe="tutorial-fast", epochs=4, batch_size=128, lr=3e-3, schedule="linear", warmup_epochs=0.2,
        label_smoothing=0.1, normalize="standard", augment=AugmentConfig(flip="alternating"),
    ),
    # airnet after airbench94: Nesterov SGD, momentum 0.85, bias lr x64, label smoothing 0.2,
    # 2-pixel translations and alternating flips, warm-up for 23% of the run then linear decay,
    # flip + translate TTA. Fewer epochs than airbench's 9.9 to fit 8 minutes on 2 CPU cores.
    "fast": TrainConfig(
        recipe="fast", model="airnet", epochs=8, batch_size=1024, optimizer="sgd", lr=_AIRBENCH_LR, momentum=0.85,
        weight_decay=_AIRBENCH_WD, bias_lr_scale=64.0, schedule="linear", warmup_epochs=0.23 * 8, label_smoothing=0.2,
        normalize="standard", augment=AugmentConfig(flip="alternating", translate=2), tta=2, eval_batch_size=1000,
    ),
    # airbench95's wider network (128/384/384), trained longer than its 15 epochs to make up for
    # the JPEG copy's lost detail: the most accurate preset within an hour on 2 CPU cores.
    "best": TrainConfig(
        recipe="best", model="airnet", model_args={"widths": (128, 384, 384)}, epochs=18, batch_size=1024,
        optimizer="sgd", lr=_AIRBENCH_LR, momentum=0.85, weight_decay=_AIRBENCH_WD, bias_lr_scale=64.0,
        schedule="linear", warmup_epochs=0.23 * 18, label_smoothing=0.2, normalize="standard",
        augment=AugmentConfig(flip="alternating", translate=2), tta=2, eval_batch_size=1000,
    ),
}


def list_recipes() -> list[str]:
    return list(RECIPES)


def recipe_config(name: str, **overrides) -> TrainConfig:
    """The preset `name` with `overrides` (field=value) applied."""
    if name not in RECIPES:
        raise ConfigError(f"Unknown recipe {name!r}; choose one of: {', '.join(RECIPES)}.")
    return replace(RECIPES[name], **overrides)
