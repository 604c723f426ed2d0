"""ResNet-9 (Myrtle.ai's DAWNBench network) and ResNet-18, for CIFAR-sized images and photos alike.

With base width w (64):

    resnet-9:  stem conv w - [conv 2w, pool, residual(2 convs)] - [conv 4w, pool]
               - [conv 8w, pool, residual(2 convs)] - global max pool - linear x 0.125
    resnet-18: stem conv w - 4 stages of 2 basic blocks (w, 2w, 4w, 8w; strides 1, 2, 2, 2)
               - global average pool - linear

Every conv is followed by BatchNorm and ReLU. The stem depends on the image size:

- below 96 pixels (the shorter side), CIFAR ResNets' 3x3 conv at full resolution (kuangliu/
  pytorch-cifar, Myrtle.ai): a 32x32 image reaches the first stage at 32x32;
- from 96 pixels up, the ImageNet ResNets' stem (He et al. 2016, "Deep Residual Learning for
  Image Recognition", Table 1; torchvision's `resnet.py`): 7x7 stride-2 conv - BN - ReLU -
  3x3 stride-2 max pool, 4x less resolution before the first stage. So a 224x224 image costs
  what torchvision's ResNet-18 costs (1.81 GMACs, its documented "GFLOPS"; tests check the
  count) instead of 27 GMACs at full resolution, and the stages see 56x56 as on ImageNet. At 96
  pixels the first stage still gets 24x24, close to CIFAR's 32x32, which is why 96 is the switch.
  A single 3x3 stride-2 conv would be cheaper in the stem but halves the resolution only once,
  so the stages would cost about 4x more (some 7 GMACs at 224x224); the 7x7 stem also keeps
  the weights' shapes torchvision's, so its published parameter and cost figures check this file.

`stem` picks one explicitly.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from convnet.errors import ConfigError
from convnet.models.layers import GlobalPoolHead
from convnet.models.registry import register_model

IMAGENET_STEM_FROM = 96  # pixels: the smallest image side for which stem="auto" picks the ImageNet stem


def conv_bn(in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    """conv (no bias: the BatchNorm shift replaces it) - BatchNorm."""
    conv = nn.Conv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels))


def conv_bn_relu(in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(*conv_bn(in_channels, out_channels, kernel, stride), nn.ReLU(inplace=True))


class Residual(nn.Module):
    """x + body(x): ResNet-9's residual, two conv-BN-ReLU at constant width."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn_relu(channels, channels), conv_bn_relu(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class BasicBlock(nn.Module):
    """ResNet-18's block: relu(bn(conv(relu(bn(conv(x))))) + shortcut(x)),
    the shortcut a 1x1 conv-BN when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn_relu(in_channels, out_channels, stride=stride),
                                  conv_bn(out_channels, out_channels))
        same_shape = stride == 1 and in_channels == out_channels
        # The projection is a 1x1 conv with stride `stride`, computed as a stride-1 conv of every
        # stride-th pixel: the same function and weights, but it keeps out oneDNN's strided 1x1
        # weight-gradient kernel, which writes past its buffer in channels-last layout when the conv
        # has fewer input channels than its block (16 on AVX-512): heap corruption or wrong
        # gradients on CPU for widths below 16 (uxlfoundation/oneDNN#6035, torch 2.13).
        self.stride = stride
        self.shortcut = nn.Identity() if same_shape else conv_bn(in_channels, out_channels, kernel=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x[:, :, :: self.stride, :: self.stride]))


def _stem(in_chans: int, width: int, stem: str) -> nn.Sequential:
    if stem == "imagenet":
        return nn.Sequential(conv_bn_relu(in_chans, width, kernel=7, stride=2), nn.MaxPool2d(3, 2, padding=1))
    return conv_bn_relu(in_chans, width)


def _resnet9_body(w: int) -> list[nn.Module]:
    return [
        conv_bn_relu(w, 2 * w), nn.MaxPool2d(2), Residual(2 * w),
        conv_bn_relu(2 * w, 4 * w), nn.MaxPool2d(2),
        conv_bn_relu(4 * w, 8 * w), nn.MaxPool2d(2), Residual(8 * w),
    ]  # fmt: skip


def _resnet18_body(w: int) -> list[nn.Module]:
    blocks: list[nn.Module] = []
    for stage, stride in enumerate((1, 2, 2, 2)):
        c_in, c_out = w * 2 ** max(stage - 1, 0), w * 2**stage
        blocks += [BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)]
    return blocks


class ResNet(nn.Module):
    def __init__(self, num_classes: int, in_chans: int, depth: int, width: int, stem: str):
        super().__init__()
        self.num_classes = num_classes
        self.in_chans = in_chans
        body = _resnet9_body(width) if depth == 9 else _resnet18_body(width)
        self.features = nn.Sequential(_stem(in_chans, width, stem), *body)
        if depth == 9:
            # Myrtle's head: max pool and logits scaled down by 8, which trained faster there.
            self.head = GlobalPoolHead(8 * width, num_classes, pool="max", bias=False, scale=0.125)
        else:
            self.head = GlobalPoolHead(8 * width, num_classes, pool="avg", bias=True)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> (B, 8 * width, h, w), the last stage's feature map."""
        return self.features(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def stem_of_weights(model_args: dict, state: dict) -> dict:
    """`model_args` with stem "auto" pinned to the stem whose weights `state` holds.

    Until the ImageNet stem started at 96 pixels it started at 128, so a model file of 96-127
    pixel images written then holds CIFAR-stem weights under stem "auto", which now means the
    ImageNet stem for that size; the weights' own names say which stem they fit.
    """
    if model_args.get("stem", "auto") != "auto":
        return model_args
    for key, stem in (("features.0.0.weight", "cifar"), ("features.0.0.0.weight", "imagenet")):
        if key in state:
            return {**model_args, "stem": stem}
    return model_args


@register_model("resnet")
def resnet(
    num_classes: int,
    in_chans: int,
    input_size: tuple[int, int],
    depth: int = 18,
    width: int = 64,
    stem: str = "auto",
) -> ResNet:
    """Build ResNet-9 or ResNet-18.

    Args:
        depth: 9 or 18.
        width: channels after the stem; the stages use width, 2, 4 and 8 times it.
        stem: "cifar" (3x3 conv, full resolution), "imagenet" (7x7 stride-2 conv and max pool)
            or "auto": "imagenet" when the shorter image side is at least IMAGENET_STEM_FROM (96), else "cifar".
    """
    if depth not in (9, 18):
        raise ConfigError(f"resnet depth must be 9 or 18, got {depth}; pass depth=9 or depth=18.")
    if stem not in ("auto", "cifar", "imagenet"):
        raise ConfigError(f"resnet stem must be 'auto', 'cifar' or 'imagenet', got {stem!r}.")
    if width < 1:
        raise ConfigError(f"resnet width must be a positive number of channels, got {width}.")
    if stem == "auto":
        stem = "imagenet" if min(input_size) >= IMAGENET_STEM_FROM else "cifar"
    # ResNet-9's three 2x pools (and the ImageNet stem's 4x) must leave at least one pixel.
    smallest = (8 if depth == 9 else 1) * (4 if stem == "imagenet" else 1)
    if min(input_size) < smallest:
        raise ConfigError(
            f"resnet-{depth} with the {stem} stem needs images of at least {smallest}x{smallest} pixels, "
            f"got {input_size[0]}x{input_size[1]}; resize the images."
        )
    return ResNet(num_classes, in_chans, depth, width, stem)
