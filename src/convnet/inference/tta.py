"""Test-time augmentation: average a model's logits over flipped and shifted copies of the input.

The views and weights are airbench94's. With x a batch (N, C, H, W) and P = x reflect-padded by
one pixel (`F.pad(x, (1, 1, 1, 1), "reflect")`):

    level 0: x                                              weight 1
    level 1: x, flip(x)                                     1/2 each
    level 2: x, flip(x)                                     1/4 each
             P[:, :, 0:H, 0:W], its flip                    1/8 each  (content moves down-right 1 px)
             P[:, :, 2:H+2, 2:W+2], its flip                1/8 each  (content moves up-left 1 px)

flip mirrors left-right. Level 2 is level 1's average, weighted 1/2, plus 1/2 of the mean of
the two shifted pairs. Logits are averaged (not probabilities), in float32.
"""
from __future__ import annotations

import functools
import operator
from collections.abc import Callable

import torch

from convnet.data.augment import reflect_shift
from convnet.errors import ConfigError

TTA_WEIGHTS = {
    0: (1.0,),
    1: (0.5, 0.5),
    2: (0.25, 0.25, 0.125, 0.125, 0.125, 0.125),
}  # level -> weight of each view, in the order `tta_views` returns them


def _check_level(level: int) -> None:
    if level not in TTA_WEIGHTS:
        raise ConfigError(f"Test-time augmentation level must be 0, 1 or 2, got {level}.")


def tta_views(x: torch.Tensor, level: int) -> list[torch.Tensor]:
    """The views of batch x (N, C, H, W) that `level` averages over, in the order listed above."""
    _check_level(level)
    views = [x]
    if level >= 1:
        views.append(x.flip(-1))
    if level >= 2:
        for shift in (-1, 1):
            d = torch.full((len(x),), shift, dtype=torch.int64, device=x.device)
            shifted = reflect_shift(x, d, d)
            views += [shifted, shifted.flip(-1)]
    return views


def tta_logits(model_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, level: int) -> torch.Tensor:
    """The weighted mean of `model_fn`'s logits over `tta_views(x, level)`: (N, num_classes) float32.

    `model_fn` is called once per view, so peak memory is that of one batch; run it in eval mode.
    """
    views = tta_views(x, level)
    weighted = (w * model_fn(v).float() for w, v in zip(TTA_WEIGHTS[level], views, strict=True))
    return functools.reduce(operator.add, weighted)  # a running sum, not sum()'s int 0 + tensors
