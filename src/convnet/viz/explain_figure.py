"""The worked example as one figure: every grid of `scratch.explain.worked_example`, numbers written in.

Row 1: the image's channels. Row 2: the filter's slices. Row 3: the convolution map (before
ReLU), after ReLU, max and average pooling. Row 4: the softmax probabilities.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patheffects import withStroke

_CHANNEL_CMAPS = {"R": "Reds", "G": "Greens", "B": "Blues"}
_HALO = [withStroke(linewidth=2.5, foreground="white")]


def _annotated_grid(ax: Axes, values: np.ndarray, title: str, cmap: str, centred: bool = False) -> None:
    """Draw a 2-D array as coloured cells with each cell's number written on it.

    Args:
        centred: put 0 in the middle of the colour map (for weights, which have both signs).
    """
    top = max(abs(values).max(), 1) if centred else None
    ax.imshow(values, cmap=cmap, vmin=-top if centred else None, vmax=top)
    for (i, j), v in np.ndenumerate(values):
        text = f"{round(float(v), 2):g}"
        # A white halo keeps black digits readable on dark and light cells alike.
        ax.text(j, i, text, ha="center", va="center", fontsize=9, path_effects=_HALO)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def worked_example_figure(result: dict) -> Figure:
    """A matplotlib Figure (no pyplot, no global backend) of a `worked_example` result."""
    names = result["channel_names"]
    stages = [("conv", "convolution + bias"), ("relu", "ReLU"), ("max_pool", "max pooling"),
              ("avg_pool", "average pooling")]
    cols = max(len(names), len(stages))
    fig = Figure(figsize=(2.4 * cols, 9.5), layout="constrained")
    axes = fig.subplots(4, cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    k = result["kernel"]
    for c, name in enumerate(names):
        for row, key, title in ((0, "image", f"image: {name}"), (1, "filters", f"filter {k}x{k}: {name}")):
            axes[row, c].set_axis_on()
            cmap = _CHANNEL_CMAPS.get(name, "Greys") if row == 0 else "coolwarm"
            _annotated_grid(axes[row, c], np.array(result[key][c]), title, cmap, centred=row == 1)
    for c, (key, title) in enumerate(stages):
        axes[2, c].set_axis_on()
        _annotated_grid(axes[2, c], np.array(result[key][0]), title, "viridis")
    probs = axes[3, 0]
    probs.set_axis_on()
    probs.barh(result["output_names"], result["probabilities"], color="tab:blue")
    for y, p in enumerate(result["probabilities"]):
        probs.text(p, y, f" {p:.3f}", va="center", fontsize=9)
    probs.set_xlim(0, 1.25)
    probs.set_title("softmax", fontsize=9)
    fig.suptitle(f"bias {result['bias']}, stride {result['stride']}, padding {result['padding']}, "
                 f"pool {result['pool_kernel']} stride {result['pool_stride']}", fontsize=10)
    return fig


def save_worked_example_figure(result: dict, path: str | Path) -> None:
    """Write the figure as an image; the format follows the suffix (.png, .svg, .pdf)."""
    worked_example_figure(result).savefig(path, dpi=100)
