"""Softmax and the softmax cross-entropy loss, forward and backward (torch's nn.CrossEntropyLoss)."""
from __future__ import annotations

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log softmax of (N, K) logits; the row maximum is subtracted so exp cannot overflow."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(logits))


class CrossEntropyLoss:
    """Mean over the batch of -log softmax(logits)[target]; takes logits, like torch's."""

    def forward(self, logits: np.ndarray, targets: np.ndarray) -> float:
        """Args:
            logits: (N, K) scores.
            targets: (N,) integer class indices.
        Returns:
            The mean loss.
        """
        logp = log_softmax(logits)
        self._probs, self._targets = np.exp(logp), np.asarray(targets)
        return float(-logp[np.arange(len(logp)), self._targets].mean())

    __call__ = forward

    def backward(self) -> np.ndarray:
        """Gradient of the last mean loss with respect to the logits: (softmax - one_hot) / N."""
        grad = self._probs.copy()
        grad[np.arange(len(grad)), self._targets] -= 1.0
        return grad / len(grad)
