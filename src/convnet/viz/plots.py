"""Matplotlib figures of a run: the tutorial's accuracy curve and the confusion matrix (image grids: viz.grid)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from convnet.files import atomic_write

# Figures are made with matplotlib's object API, not pyplot: no backend is chosen or changed
# (a notebook that imports convnet keeps its inline plots) and nothing is left open.


def _save(fig: Figure, path: Path) -> Path:
    """Write `fig` as a PNG through a temporary file and a rename."""
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight"))
    return path


def plot_curves(history: Sequence[dict], path: str | Path) -> Path:
    """Accuracy and loss per epoch, train against validation, as the tutorial plots them."""
    epochs = [int(r["epoch"]) for r in history]
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ("acc", "loss"), strict=True):
        ax.plot(epochs, [float(r[f"train_{metric}"]) for r in history], "o-", label=f"train {metric}")
        val = [r.get(f"val_{metric}") for r in history]
        if all(v not in (None, "") for v in val):
            ax.plot(epochs, [float(v) for v in val], "o-", label=f"val {metric}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy" if metric == "acc" else "loss")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if metric == "acc" else "upper right")
    axes[0].set_ylim(0, 1)
    return _save(fig, path)


def plot_confusion(confusion: torch.Tensor, classes: Sequence[str], path: str | Path,
                   title: str = "confusion matrix") -> Path:
    """Rows are true classes, columns predicted; each cell shows its count."""
    cm = confusion.numpy()
    k = len(classes)
    fig = Figure(figsize=(1.0 + 0.6 * k, 0.8 + 0.6 * k))
    ax = fig.subplots()
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    threshold = cm.max() / 2 if cm.size else 0
    for i, j in np.ndindex(cm.shape):
        ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                color="white" if cm[i, j] > threshold else "black")
    return _save(fig, path)
