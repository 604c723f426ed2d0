"""Building blocks shared by several model families."""
from __future__ import annotations

import torch
import torch.nn as nn


class GlobalPoolHead(nn.Module):
    """Global pooling, then a linear layer times a constant: (B, C, h, w) -> (B, num_classes)."""

    def __init__(self, in_features: int, num_classes: int, pool: str, bias: bool, scale: float = 1.0):
        super().__init__()
        if pool not in ("max", "avg"):
            raise ValueError(f"pool must be 'max' or 'avg', got {pool!r}")
        self.pool = pool
        self.fc = nn.Linear(in_features, num_classes, bias=bias)
        self.scale = scale

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        pooled = features.amax(dim=(2, 3)) if self.pool == "max" else features.mean(dim=(2, 3))  # (B, C)
        return self.fc(pooled) * self.scale
