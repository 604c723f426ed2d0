"""Grad-CAM (Selvaraju et al., 2017): which parts of an image made the model choose a class.

For a class c with logit y_c and a target feature map A (K channels, h x w):

    w_k = mean over (i, j) of dy_c / dA_k[i, j]       how much channel k pushes towards c
    cam = ReLU(sum_k w_k A_k)                        (h, w): where that evidence lies

The map is upsampled bilinearly to the input size and divided by its maximum, so 0 means "no
evidence for c here" and 1 the strongest; a map with no positive evidence stays all zero.

The target layer is found generically, so every registered architecture works: the output of the
last module, in forward order, that still has a spatial map (4-D with more than one position).
After it come only the flatten or global pooling and the dense head, so it is the most semantic
map that can still say *where*. For the tutorial CNN it is the ReLU after the third convolution
(64 x 4 x 4 on 32 x 32 input): the rectified output of the last convolution, as in the paper. For
airnet and resnet it is `forward_features`' output; for a spec ending in global pooling ('g') it
is the map just before the pooling, which `forward_features` would already have pooled to 1x1.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from PIL import Image

from convnet.errors import ConfigError
from convnet.viz.grid import fit_scale, save_figure, show_image, to_pil
from convnet.viz.hooks import hooked

CAM_PIXELS = 256  # the overlay is upscaled until its longer side is about this many pixels
CAM_ALPHA = 0.5  # weight of the colour map over the image


class Cam(NamedTuple):
    heatmap: torch.Tensor  # (H, W) float32 in [0, 1], at the model's input size
    class_name: str  # the class explained
    probability: float  # the model's softmax probability of that class
    layer: str  # the module whose output map was weighed, e.g. "layers.7 (ReLU)"
    layer_shape: tuple[int, int, int]  # that map's (K, h, w)


def _forward_keeping_last_map(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, str, torch.Tensor]:
    """Run the model, keeping the output of the last module that still has a spatial map.

    Returns:
        (logits (1, num_classes), the module's name and type, target map (1, K, h, w)); the
        tensors are part of the autograd graph.
    """
    spatial: list[tuple[str, torch.Tensor]] = []

    def keep(name: str, module: nn.Module, inputs, output) -> None:
        if isinstance(output, torch.Tensor) and output.ndim == 4 and output.shape[2] * output.shape[3] > 1:
            spatial.append((f"{name} ({type(module).__name__})", output))

    with hooked(model, [(m, partial(keep, name)) for name, m in model.named_modules()]):
        logits = model(x)
    if not spatial:
        raise ConfigError(
            "Every layer of this model reduces the image to 1x1, so Grad-CAM has no map to show; "
            "use a model with convolutions on a larger input."
        )
    return logits, *spatial[-1]


def class_index(classes: tuple[str, ...], class_name: str | None, logits: torch.Tensor) -> int:
    """The index of `class_name`, or of the highest logit when it is None."""
    if class_name is None:
        return int(logits.argmax())
    if class_name not in classes:
        raise ConfigError(f"The model has no class {class_name!r}; choose one of: {', '.join(classes)}.")
    return classes.index(class_name)


def grad_cam(model: nn.Module, x: torch.Tensor, classes: tuple[str, ...], class_name: str | None = None) -> Cam:
    """Grad-CAM heatmap of one image for one class.

    Args:
        model: a model in eval mode.
        x: the image as model input, normalized float (1, C, H, W) on the model's device
            (`inference.model_file.Classifier.model_input` makes it from a file).
        classes: the model's class names.
        class_name: the class to explain; default the model's prediction.
    Returns:
        Cam(heatmap (H, W) in [0, 1] at input resolution, class name, its probability, the
        layer explained and its map's shape).
    """
    # The input requires grad so the graph is built even when the weights are frozen.
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits, layer, target = _forward_keeping_last_map(model, x)
        c = class_index(classes, class_name, logits[0])
        (grads,) = torch.autograd.grad(logits[0, c], target)
    weights = grads.mean(dim=(2, 3), keepdim=True)  # (1, K, 1, 1)
    cam = F.relu((weights * target.detach()).sum(dim=1, keepdim=True))  # (1, 1, h, w)
    cam = F.interpolate(cam, size=tuple(x.shape[2:]), mode="bilinear", align_corners=False)[0, 0]
    top = cam.max()
    heatmap = cam / top if top > 0 else cam
    probability = torch.softmax(logits.detach()[0].double(), dim=0)[c]
    return Cam(heatmap.float().cpu(), classes[c], float(probability), layer, tuple(target.shape[1:]))


def blend(image: torch.Tensor, heatmap: torch.Tensor, alpha: float = CAM_ALPHA) -> torch.Tensor:
    """Colour the heatmap with matplotlib's 'jet' (blue = 0, red = 1) and lay it over the image.

    Args:
        image: uint8 (C, H, W), C 1 or 3.
        heatmap: (H, W) in [0, 1].
    Returns:
        uint8 (3, H, W): (1 - alpha) * image + alpha * jet(heatmap).
    """
    colours = torch.from_numpy(colormaps["jet"](heatmap.detach().cpu().double().numpy())[..., :3]).permute(2, 0, 1)
    rgb = image.detach().cpu().double().expand(3, -1, -1)
    return ((1 - alpha) * rgb + alpha * 255 * colours).round().clamp(0, 255).to(torch.uint8)


def cam_overlay(image: torch.Tensor, heatmap: torch.Tensor, scale: int | None = None) -> Image.Image:
    """The heatmap blended over the image (see `blend`), upscaled with nearest neighbour.

    Args:
        image: uint8 (C, H, W).
        heatmap: (H, W) in [0, 1], as `grad_cam` returns.
        scale: upscaling factor; default brings the longer side to about CAM_PIXELS pixels.
    """
    return to_pil(blend(image, heatmap), scale or fit_scale(image.shape[1:], CAM_PIXELS))


def cam_figure(pixels: torch.Tensor, cam: Cam) -> Figure:
    """The input and its Grad-CAM overlay side by side, with a colour bar and a caption.

    Args:
        pixels: the image as the model sees it, uint8 (C, H, W) at its input size.
    Returns:
        A Figure of three axes: the input, the overlay (`blend` at input size), the colour bar.
    """
    fig = Figure(figsize=(10, 5), layout="constrained")
    ax_input, ax_cam = fig.subplots(1, 2)
    show_image(ax_input, pixels, f"input ({pixels.shape[1]} x {pixels.shape[2]} pixels)")
    show_image(ax_cam, blend(pixels, cam.heatmap), f"where the evidence for {cam.class_name} lies")
    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), "jet"), ax=ax_cam, shrink=0.8)
    bar.set_label(f"relative importance for {cam.class_name} (0: none, 1: the most in this image)", fontsize=9)
    k, h, w = cam.layer_shape
    fig.suptitle(f"Grad-CAM for {cam.class_name} (probability {cam.probability:.1%}), "
                 f"from layer {cam.layer}: {k} x {h} x {w}", fontsize=13)
    fig.supxlabel(f"The {h} x {w} map weighted by how much each channel raises the score of {cam.class_name}, "
                  f"enlarged to the input; laid over it at {CAM_ALPHA:.0%}.", fontsize=10)
    return fig


def write_cam(model: nn.Module, pixels: torch.Tensor, x: torch.Tensor, classes: tuple[str, ...], out_dir: str | Path,
              class_name: str | None = None) -> Path:
    """Write `cam_<class>.png`: `cam_figure` of the image for one class.

    Args:
        pixels: the image as the model sees it, uint8 (C, H, W) at its input size.
        x: the same image as model input (see `grad_cam`).
        class_name: the class to explain; default the model's prediction.
    Returns:
        The path written.
    """
    cam = grad_cam(model, x, classes, class_name)
    return save_figure(cam_figure(pixels, cam), Path(out_dir) / f"cam_{cam.class_name}.png")
