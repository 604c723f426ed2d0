"""What each convolution of a model responds to: feature maps and first-layer filters, as images.

Layers are found generically, so every registered architecture works: a forward hook on each
`nn.Conv2d` records its output, in the order the forward pass runs them. The maps shown are the
raw convolution outputs, before any batch norm or activation, because that is the one point every
architecture has in common (a ReLU may be a module, a function, or fused after a batch norm).
Negative responses, which a ReLU would zero, stay visible as the dark end of each channel's scale.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
import torch.nn as nn
from PIL import Image

from convnet.errors import ConfigError
from convnet.viz.grid import fit_scale, image_grid, save_png
from convnet.viz.hooks import hooked

MAP_PIXELS = 64  # a feature map is upscaled until its longer side is about this many pixels
FILTER_PIXELS = 48  # likewise for a first-layer filter (3x3 or 5x5 weights)


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """Every `nn.Conv2d` of the model with its name in `named_modules()` order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def _record(maps: list, name: str, module: nn.Module, inputs, output: torch.Tensor) -> None:
    # A copy, because an in-place ReLU right after the convolution would overwrite the output.
    maps.append((name, output[0].detach().to("cpu", copy=True)))


@torch.no_grad()
def feature_maps(model: nn.Module, x: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """Run one image through the model and keep every convolution's output.

    Args:
        model: a model in eval mode.
        x: the image as model input, normalized float (1, C, H, W) on the model's device
            (`engine.checkpoint.Classifier.model_input` makes it from a file).
    Returns:
        [(layer name, float32 (C, H, W) convolution output before batch norm and activation)],
        in the order the forward pass runs the layers.
    """
    maps: list[tuple[str, torch.Tensor]] = []
    with hooked(model, [(m, partial(_record, maps, name)) for name, m in conv_layers(model)]):
        model(x)
    return maps


def first_layer_filters(model: nn.Module) -> torch.Tensor:
    """The weights (out_channels, in_channels, kH, kW) of the model's first `nn.Conv2d`, on the CPU."""
    convs = conv_layers(model)
    if not convs:
        raise ConfigError("This model has no convolution layers, so it has no filters or feature maps to show.")
    return convs[0][1].weight.detach().to("cpu", torch.float32)


def minmax_uint8(x: torch.Tensor) -> torch.Tensor:
    """Scale each x[i] on its own to 0..255 (min -> 0, max -> 255); a constant x[i] becomes 0.

    Returns:
        uint8 tensor of x's shape.
    """
    flat = x.detach().double().flatten(1)
    lo = flat.min(dim=1, keepdim=True).values
    span = flat.max(dim=1, keepdim=True).values - lo
    scaled = torch.where(span > 0, (flat - lo) / span.clamp_min(1e-300), torch.zeros_like(flat))
    return (scaled * 255).round().to(torch.uint8).view(x.shape)


def render_feature_maps(activation: torch.Tensor, scale: int | None = None, ncols: int | None = None) -> Image.Image:
    """One layer's maps as a grid of grey images, each channel min-max normalised on its own.

    Args:
        activation: (C, H, W), as `feature_maps` returns.
        scale: nearest-neighbour upscaling; default brings a map to about MAP_PIXELS pixels.
        ncols: maps per row; default a near-square grid.
    """
    maps = minmax_uint8(activation)[:, None]  # (C, 1, H, W)
    return image_grid(maps, ncols=ncols, scale=scale or fit_scale(activation.shape[1:], MAP_PIXELS))


def render_filters(weights: torch.Tensor, scale: int | None = None, ncols: int | None = None) -> Image.Image:
    """Convolution filters as a grid: RGB when they read 3 channels, else their mean over input channels in grey.

    Args:
        weights: (out_channels, in_channels, kH, kW), as `first_layer_filters` returns.
        scale: nearest-neighbour upscaling; default brings a filter to about FILTER_PIXELS pixels.
        ncols: filters per row; default a near-square grid.
    """
    if weights.shape[1] != 3:
        weights = weights.mean(dim=1, keepdim=True)
    # Normalised per filter over all its channels, so the colour balance within a filter is kept.
    return image_grid(minmax_uint8(weights), ncols=ncols, scale=scale or fit_scale(weights.shape[2:], FILTER_PIXELS))


def write_features(model: nn.Module, x: torch.Tensor, out_dir: str | Path) -> list[Path]:
    """Write `features_<layer>.png` for every convolution and `filters.png` for the first one.

    Args:
        x: the image as model input (see `feature_maps`).
    Returns:
        The paths written, feature maps in forward order, then the filters.
    """
    filters = first_layer_filters(model)  # first: a model without convolutions fails before writing anything
    maps = feature_maps(model, x)
    out = Path(out_dir)
    paths = [save_png(render_feature_maps(activation), out / f"features_{name}.png") for name, activation in maps]
    return [*paths, save_png(render_filters(filters), out / "filters.png")]
