"""The torch side of spec-built networks (see `convnet.spec`), the tutorial's CNN among them."""
from __future__ import annotations

import torch
import torch.nn as nn

from convnet.models.registry import register_model
from convnet.spec import TUTORIAL_SPEC, Layer, plan


class SequentialNet(nn.Module):
    """A plain stack of layers; `layers[:head_start]` are the features, the rest the head."""

    def __init__(self, layers: list[nn.Module], head_start: int, num_classes: int, in_chans: int):
        super().__init__()
        self.layers = nn.Sequential(*layers)
        self.head_start = head_start
        self.num_classes = num_classes
        self.in_chans = in_chans

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return _run(self.layers[: self.head_start], x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return _run(self.layers[self.head_start :], features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _run(self.layers, x)


def _run(layers: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """Apply `layers` in order, running each ReLU-then-max-pool pair as pool-then-ReLU.

    The two orders compute the same values and gradients (ReLU is monotone, so it commutes with
    max), but pooling first leaves the ReLU a quarter of the elements. The ReLU module itself is
    called, so hooks on it (the summary table, feature maps) still see it run.
    """
    i = 0
    while i < len(layers):
        layer = layers[i]
        if isinstance(layer, nn.ReLU) and i + 1 < len(layers) and isinstance(layers[i + 1], nn.MaxPool2d):
            x = layer(layers[i + 1](x))
            i += 2
        else:
            x = layer(x)
            i += 1
    return x


def _module(layer: Layer) -> nn.Module:
    a = layer.args
    if layer.kind == "conv2d":
        return nn.Conv2d(a["in_channels"], a["out_channels"], a["kernel"], a["stride"], a["padding"])
    if layer.kind == "linear":
        return nn.Linear(a["in_features"], a["out_features"])
    if layer.kind == "maxpool2d":
        return nn.MaxPool2d(a["kernel"], a["stride"])
    if layer.kind == "avgpool2d":
        return nn.AvgPool2d(a["kernel"], a["stride"])
    if layer.kind == "batchnorm2d":
        return nn.BatchNorm2d(a["features"])
    if layer.kind == "batchnorm1d":
        return nn.BatchNorm1d(a["features"])
    if layer.kind == "dropout":
        return nn.Dropout(a["rate"])
    simple = {"relu": nn.ReLU, "flatten": nn.Flatten, "globalavgpool": lambda: nn.AdaptiveAvgPool2d(1)}
    return simple[layer.kind]()


def build_sequential(spec: str, num_classes: int, in_chans: int, input_size: tuple[int, int]) -> SequentialNet:
    """Build the network a spec string describes; raises `SpecError` naming a bad layer."""
    p = plan(spec, num_classes, in_chans, input_size)
    net = SequentialNet([_module(layer) for layer in p.layers], p.head_start, num_classes, in_chans)
    # Glorot-uniform weights and zero biases are Keras's defaults: the tutorial trains as it did there.
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return net


@register_model("tutorial")
def tutorial(num_classes: int, in_chans: int, input_size: tuple[int, int]) -> SequentialNet:
    """The tutorial's CNN: conv 32, pool, conv 64, pool, conv 64, dense 64, dense num_classes."""
    return build_sequential(TUTORIAL_SPEC, num_classes, in_chans, input_size)


@register_model("spec")
def spec(num_classes: int, in_chans: int, input_size: tuple[int, int], arch: str = TUTORIAL_SPEC) -> SequentialNet:
    """A sequential CNN from a spec string (`--arch`), see `convnet.spec`."""
    return build_sequential(arch, num_classes, in_chans, input_size)
