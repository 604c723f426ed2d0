"""Optimizers: parameter groups for every recipe, and Muon for conv filters.

`build_optimizer` is the one place that decides which parameters learn how:
- weights (2-D and up) at `lr` with `weight_decay`;
- biases and normalization parameters at `lr * bias_lr_scale` and, with `bias_decay`, the
  same decay per step as the weights (airbench's rule);
- with `optimizer="muon"`, conv filters (4-D) by Muon instead of SGD;
- with `whiten_bias_epochs`, the bias of airnet's whitening layer in a group of its own, whose
  rate `lr_factors` lets fall to 0 over those first epochs (airbench's rule; past them the layer
  itself detaches the bias: models.airnet.PatchWhitening).

Muon (Keller Jordan et al. 2024, "Muon: MomentUm Orthogonalized by Newton-Schulz"; used by
airbench94_muon for 94% on CIFAR-10 in 8 epochs where SGD needs 9.9): each filter bank's
Nesterov momentum, flattened to (out, in * k * k), is replaced by its nearest semi-orthogonal
matrix (all singular values about 1, computed by a few Newton-Schulz iterations), so every
direction of the update moves at the same speed. airbench's variant also rescales each
filter bank to Frobenius norm sqrt(out) before the step, which keeps the effective step size
fixed but is only harmless where a BatchNorm follows the conv.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from convnet.errors import ConfigError
from convnet.inference.runtime import bf16_supported
from convnet.models.airnet import PatchWhitening
from convnet.training.config import TrainConfig
from convnet.training.schedule import lr_factor

# The quintic Newton-Schulz coefficients of Muon: chosen to push small singular values up as
# fast as possible, at the price of landing in a band around 1 rather than exactly on it.
_NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def orthogonalize(g: torch.Tensor, steps: int = 3, eps: float = 1e-7) -> torch.Tensor:
    """An approximately semi-orthogonal (out, n) matrix with the singular vectors of `g` (out, n).

    Runs in bfloat16 where the hardware has it (as Muon does on GPU): the iteration is
    self-correcting, so the low precision costs nothing, and the matmuls run several times
    faster. Elsewhere bfloat16 would be emulated, so it runs in float32.
    """
    x = g.bfloat16() if bf16_supported(g.device) else g.float()
    x = x / (x.norm() + eps)  # largest singular value <= 1, where the iteration converges
    wide = x.shape[0] <= x.shape[1]
    if not wide:
        x = x.T  # iterate on the smaller Gram matrix
    a, b, c = _NS_COEFFICIENTS
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x if wide else x.T).to(g.dtype)


class MuonSGD(torch.optim.Optimizer):
    """Nesterov SGD for groups with `muon=False`, Muon for groups with `muon=True`.

    One optimizer for both kinds keeps the schedule, checkpoints and resume uniform.
    SGD groups follow torch.optim.SGD(nesterov=True) exactly (weight decay added to the
    gradient); Muon groups take no weight decay (their norm is fixed instead).
    """

    def __init__(self, groups: list[dict], lr: float, momentum: float):
        super().__init__(groups, {"lr": lr, "momentum": momentum, "weight_decay": 0.0, "muon": False})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum, decay = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad if group["muon"] or not decay else p.grad.add(p, alpha=decay)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = g.clone()
                else:
                    state["momentum_buffer"].mul_(momentum).add_(g)
                g = g.add(state["momentum_buffer"], alpha=momentum)  # Nesterov
                if group["muon"]:
                    p.mul_(len(p) ** 0.5 / p.norm())
                    g = orthogonalize(g.reshape(len(g), -1)).view_as(p)
                p.add_(g, alpha=-lr)
        return loss


def whitening_layer(model: nn.Module, config: TrainConfig) -> PatchWhitening | None:
    """The layer whose bias `config.whiten_bias_epochs` limits: the model's patch whitening, if asked.

    Raises:
        ConfigError: asked of a model without a whitening layer.
    """
    if not config.whiten_bias_epochs:
        return None
    layer = next((m for m in model.modules() if isinstance(m, PatchWhitening)), None)
    if layer is None:
        raise ConfigError("--whiten-bias-epochs applies to a patch-whitening first layer (airnet); "
                          f"model {config.model!r} has none, so set it to 0.")
    return layer


def lr_factors(optimizer: torch.optim.Optimizer, model: nn.Module, config: TrainConfig, steps_per_epoch: int,
               factor: Callable[[int], float]) -> list[Callable[[int], float]]:
    """Each parameter group's learning-rate factor by step: `factor` (the run's schedule), except for
    the whitening bias's group, whose rate falls on a straight line to 0 over its first epochs."""
    layer = whitening_layer(model, config)
    if layer is None:
        return [factor] * len(optimizer.param_groups)
    steps = config.whiten_bias_epochs * steps_per_epoch

    def short_lived(step: int) -> float:
        return lr_factor(step, steps, 0, "linear")

    return [short_lived if any(p is layer.bias for p in g["params"]) else factor for g in optimizer.param_groups]


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer of `config` over `model`'s parameters; the whitening bias (with `whiten_bias_epochs`) in a group
    of its own."""
    params = [p for p in model.parameters() if p.requires_grad]
    muon = config.optimizer == "muon"
    if muon and not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise ConfigError(
            f"--optimizer muon fixes the norm of every conv filter bank, which only suits networks with "
            f"BatchNorm after their convs (airnet, resnet); model {config.model!r} has none, so use sgd or adam."
        )
    filters = [p for p in params if muon and p.ndim == 4]
    layer = whitening_layer(model, config)
    short_lived = layer.bias if layer is not None else None
    rest = [p for p in params if not (muon and p.ndim == 4) and p is not short_lived]
    weights, biases = [p for p in rest if p.ndim > 1], [p for p in rest if p.ndim <= 1]
    bias_decay = config.weight_decay / config.bias_lr_scale if config.bias_decay else 0.0
    groups = [
        {"params": weights, "weight_decay": config.weight_decay, "lr": config.lr},
        {"params": biases, "weight_decay": bias_decay, "lr": config.lr * config.bias_lr_scale},
    ]
    if short_lived is not None:
        groups.append({"params": [short_lived], "weight_decay": bias_decay, "lr": config.lr * config.bias_lr_scale})
    # torch's fused kernels update every tensor in one pass instead of one small op per tensor.
    fused = all(p.device.type in ("cpu", "cuda") for p in params)
    if config.optimizer == "adam":
        # Keras's Adam uses epsilon 1e-7 where torch uses 1e-8; the tutorial trained with Keras's.
        opt_cls = torch.optim.AdamW if config.weight_decay else torch.optim.Adam
        return opt_cls(groups, lr=config.lr, eps=1e-7, fused=fused)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=True, fused=fused)
    groups.append({"params": filters, "lr": config.muon_lr, "momentum": config.muon_momentum, "muon": True})
    return MuonSGD([g for g in groups if g["params"]], lr=config.lr, momentum=config.momentum)
