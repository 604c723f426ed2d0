"""An exponential moving average of a model's weights, evaluated in place of the raw weights.

Averaging the last few hundred steps' weights smooths out SGD noise: a cheap accuracy gain
in short runs (Polyak & Juditsky 1992; used by timm's ModelEmaV2 and by airbench's lookahead).
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn


class WeightAverage:
    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for avg, cur in zip(self.model.state_dict().values(), model.state_dict().values(), strict=True):
            if avg.is_floating_point():
                avg.lerp_(cur, 1.0 - self.decay)
            else:
                avg.copy_(cur)  # counters such as BatchNorm's num_batches_tracked
