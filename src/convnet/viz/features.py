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

import numpy as np
import torch
import torch.nn as nn
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from PIL import Image

from convnet.errors import ConfigError
from convnet.viz.grid import FIGURE_DPI, fit_scale, image_grid, save_figure, show_image
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
            (`inference.model_file.Classifier.model_input` makes it from a file).
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


def _chw(image: Image.Image) -> np.ndarray:
    """A Pillow RGB image -> uint8 (3, H, W), the layout `show_image` takes."""
    return np.asarray(image).transpose(2, 0, 1)


def _describe(conv: nn.Conv2d) -> str:
    """'Conv2d 3 -> 32 channels, 3x3 kernel, stride 1': what a newcomer needs to read the shape."""
    kh, kw = conv.kernel_size
    stride = conv.stride[0] if conv.stride[0] == conv.stride[1] else "x".join(map(str, conv.stride))
    return f"Conv2d {conv.in_channels} -> {conv.out_channels} channels, {kh}x{kw} kernel, stride {stride}"


def _grey_bar(fig: Figure, ax: Axes, label: str) -> None:
    """A colour bar beside `ax` for tiles drawn in grey from 0 (black) to 1 (white)."""
    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), "gray"), ax=ax, shrink=0.8)
    bar.set_label(label, fontsize=9)


def feature_maps_figure(pixels: torch.Tensor, name: str, conv: nn.Conv2d, activation: torch.Tensor) -> Figure:
    """One convolution's output for one image, labelled: the input, the maps, a title and a colour bar.

    Args:
        pixels: the image as the model sees it, uint8 (C, H, W) at its input size.
        name: the layer's name in the model, e.g. "layers.0".
        conv: that layer.
        activation: its output (C, H, W), as `feature_maps` returns it.
    Returns:
        A Figure of three axes: the input, the maps (`render_feature_maps`' tiles), the colour bar.
    """
    c, h, w = activation.shape
    mosaic = _chw(render_feature_maps(activation, scale=1))
    # Inches for the maps: at least a screenful, and at least one PNG pixel per map pixel (large inputs).
    maps_w, maps_h = max(6.0, 1.1 * mosaic.shape[2] / FIGURE_DPI), max(4.5, 1.1 * mosaic.shape[1] / FIGURE_DPI)
    fig = Figure(figsize=(1.5 * maps_w + 1.5, maps_h + 1.5), layout="constrained")  # + the input, bar and text
    ax_input, ax_maps = fig.subplots(1, 2, width_ratios=(1, 2))
    show_image(ax_input, pixels, f"input ({pixels.shape[1]} x {pixels.shape[2]} pixels)")
    show_image(ax_maps, mosaic, f"{c} maps of {h} x {w}, one per output channel")
    _grey_bar(fig, ax_maps, "each tile scaled on its own: its lowest value 0, its highest 1")
    fig.suptitle(f"{name} ({_describe(conv)}): output {c} x {h} x {w} (C x H x W)", fontsize=13)
    fig.supxlabel("What each filter of this layer found in the image, before batch norm and ReLU: "
                  "bright = a strong response there, dark = weak or negative.", fontsize=10)
    return fig


def filters_figure(name: str, weights: torch.Tensor) -> Figure:
    """The first convolution's filters, labelled: what they are and how their weights became colours.

    Args:
        name: the layer's name in the model, e.g. "layers.0".
        weights: (out_channels, in_channels, kH, kW), as `first_layer_filters` returns.
    Returns:
        A Figure of two axes: the filters (`render_filters`' tiles) and the colour bar.
    """
    n, chans, kh, kw = weights.shape
    fig = Figure(figsize=(8, 7), layout="constrained")
    ax = fig.subplots()
    show_image(ax, _chw(render_filters(weights, scale=1)), f"{n} filters of {kh} x {kw}")
    if chans == 3:
        seen = "as RGB: a filter's weights on the image's red, green and blue channels"
        scaled = "each filter scaled on its own over its 3 channels: its lowest weight 0, its highest 1"
    else:
        seen = f"in grey: each filter's mean weight over its {chans} input channel{'s' * (chans > 1)}"
        scaled = "each filter scaled on its own: its lowest weight 0, its highest 1"
    _grey_bar(fig, ax, scaled)
    fig.suptitle(f"{name}: the first convolution's {kh}x{kw} filters\n{seen}", fontsize=12)
    fig.supxlabel("A filter responds most where the image looks like it: bright where its weights are high,\n"
                  "dark where they are low; a colour is the colour it looks for.", fontsize=10)
    return fig


def write_features(model: nn.Module, pixels: torch.Tensor, x: torch.Tensor, out_dir: str | Path) -> list[Path]:
    """Write `features_<layer>.png` for every convolution and `filters.png` for the first one.

    Args:
        pixels: the image as the model sees it, uint8 (C, H, W) at its input size.
        x: the same image as model input (see `feature_maps`).
    Returns:
        The paths written, feature maps in forward order, then the filters.
    """
    filters = first_layer_filters(model)  # first: a model without convolutions fails before writing anything
    convs = dict(conv_layers(model))
    out = Path(out_dir)
    paths = [save_figure(feature_maps_figure(pixels, name, convs[name], activation), out / f"features_{name}.png")
             for name, activation in feature_maps(model, x)]
    first = next(iter(convs))
    return [*paths, save_figure(filters_figure(first, filters), out / "filters.png")]
