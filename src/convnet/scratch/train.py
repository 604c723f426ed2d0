"""One epoch of minibatch training, and evaluation, for the NumPy engine.

`convnet train --engine scratch` runs these inside the same run-folder loop as the torch engine.

Its speed and accuracy on real images are measured by benchmarks/scratch_engine.py, which
writes them to benchmarks/results/scratch_engine.json with the machine they ran on.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from convnet.scratch.losses import CrossEntropyLoss
from convnet.scratch.network import SequentialNet
from convnet.scratch.optim import Optimizer


def train_epoch(
    net: SequentialNet,
    optimizer: Optimizer,
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    rng: np.random.Generator,
    on_batch: Callable[[int, float, float], None] | None = None,
) -> tuple[float, float]:
    """Train for one pass over (x, y) in a seeded random order.

    Args:
        x: (N, C, H, W) normalized float images, best in the net's dtype (float32 trains ~2x faster).
        y: (N,) integer labels.
        rng: shuffles the images; the same seed gives the same epoch.
        on_batch: called as on_batch(n_images, loss, accuracy) after each batch, e.g. for a progress bar.
    Returns:
        (mean loss, accuracy) over the epoch, each batch weighted by its size.
    """
    net.train()
    criterion = CrossEntropyLoss()
    order = rng.permutation(len(x))
    total_loss = correct = 0.0
    for start in range(0, len(x), batch_size):
        idx = order[start : start + batch_size]
        logits = net.forward(x[idx])
        loss = criterion(logits, y[idx])
        optimizer.zero_grad()
        net.backward(criterion.backward())
        optimizer.step()
        hits = int((logits.argmax(axis=1) == y[idx]).sum())
        total_loss, correct = total_loss + loss * len(idx), correct + hits
        if on_batch is not None:
            on_batch(len(idx), loss, hits / len(idx))
    return total_loss / len(x), correct / len(x)


def evaluate(net: SequentialNet, x: np.ndarray, y: np.ndarray, batch_size: int) -> tuple[float, float]:
    """(mean loss, accuracy) of the net in eval mode on normalized images x (N, C, H, W) and labels y."""
    net.eval()
    criterion = CrossEntropyLoss()
    total_loss = correct = 0.0
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        logits = net.forward(xb)
        total_loss += criterion(logits, yb) * len(xb)
        correct += int((logits.argmax(axis=1) == yb).sum())
    return total_loss / len(x), correct / len(x)
