"""SGD with momentum and Adam, with torch.optim's defaults and update rules step for step."""
from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from convnet.scratch.layers import Parameter


class Optimizer:
    """Updates parameters from their `.grad`; parameters without a gradient are left alone."""

    def __init__(self, params: Iterable[Parameter]):
        self.params = list(params)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        for i, p in enumerate(self.params):
            if p.grad is not None:
                self._update(i, p)

    def _update(self, i: int, p: Parameter) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    """p -= lr * v with v = momentum * v + (grad + weight_decay * p), torch's formulation."""

    def __init__(self, params: Iterable[Parameter], lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False):
        super().__init__(params)
        self.lr, self.momentum, self.weight_decay, self.nesterov = lr, momentum, weight_decay, nesterov
        self._velocity: list[np.ndarray | None] = [None] * len(self.params)

    def _update(self, i: int, p: Parameter) -> None:
        d = p.grad + self.weight_decay * p.data if self.weight_decay else p.grad
        if self.momentum:
            v = self._velocity[i]
            # torch starts the velocity at the first gradient, not at zero.
            v = d.copy() if v is None else self.momentum * v + d
            self._velocity[i] = v
            d = d + self.momentum * v if self.nesterov else v
        p.data = p.data - self.lr * d


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction, written as torch.optim.Adam computes it."""

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        super().__init__(params)
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self._m: list[np.ndarray | None] = [None] * len(self.params)  # first moment per parameter
        self._v: list[np.ndarray | None] = [None] * len(self.params)  # second moment
        self._t = [0] * len(self.params)  # steps taken, per parameter as in torch

    def _update(self, i: int, p: Parameter) -> None:
        b1, b2 = self.betas
        g = p.grad + self.weight_decay * p.data if self.weight_decay else p.grad
        if self._m[i] is None:
            self._m[i], self._v[i] = np.zeros_like(p.data), np.zeros_like(p.data)
        self._t[i] += 1
        t = self._t[i]
        self._m[i] = b1 * self._m[i] + (1 - b1) * g
        self._v[i] = b2 * self._v[i] + (1 - b2) * g * g
        # torch divides sqrt(v) by sqrt(1 - b2^t) before adding eps, and scales lr by 1/(1 - b1^t).
        denom = np.sqrt(self._v[i]) / math.sqrt(1 - b2**t) + self.eps
        p.data = p.data - (self.lr / (1 - b1**t)) * self._m[i] / denom
