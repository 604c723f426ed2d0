"""The model registry: every architecture is registered by name and built the same way.

    @register_model("tutorial")
    def tutorial(num_classes, in_chans, input_size): ...

    create_model("tutorial", num_classes=10, in_chans=3, input_size=(32, 32))

The families register themselves when `convnet.models` is imported, so build models through
that package (`from convnet.models import create_model`).

Every registered builder takes `num_classes`, `in_chans` and `input_size` plus its own
keyword arguments, and returns an `nn.Module` with the attributes `num_classes` and `in_chans`
and the methods `forward_features(x)` and `forward_head(features)`. Models take float images
(B, C, H, W), already normalized, and return logits (B, num_classes).
"""
from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def add(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = builder
        return builder

    return add


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(
    name: str,
    num_classes: int = 10,
    in_chans: int = 3,
    input_size: tuple[int, int] = (32, 32),
    **model_args,
) -> nn.Module:
    """Build a registered model.

    Args:
        name: one of `list_models()`.
        num_classes: size of the output layer.
        in_chans: channels of the input images (1 or 3).
        input_size: (H, W) of the input images; fixed-size heads are sized from it.
        model_args: the architecture's own arguments (widths, depth, spec string...).
    """
    if name not in _REGISTRY:
        raise ValueError(f"Unknown model {name!r}; choose one of: {', '.join(list_models())}.")
    return _REGISTRY[name](num_classes=num_classes, in_chans=in_chans, input_size=tuple(input_size), **model_args)
