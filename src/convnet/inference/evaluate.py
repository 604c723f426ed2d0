"""Scoring a trained model on a labelled split: accuracy, per-class metrics, confusion matrix."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from convnet.data.dataset import Dataset, remap_labels
from convnet.inference.model_file import Classifier
from convnet.viz.grid import save_image_grid
from convnet.viz.plots import plot_confusion


@dataclass(frozen=True)
class Evaluation:
    classes: tuple[str, ...]
    labels: torch.Tensor  # (N,) true class indexes into classes
    probabilities: torch.Tensor  # (N, K)

    @property
    def predictions(self) -> torch.Tensor:
        return self.probabilities.argmax(1)

    @property
    def n(self) -> int:
        return len(self.labels)

    @property
    def accuracy(self) -> float:
        return (self.predictions == self.labels).double().mean().item()  # the exact ratio, not float32's nearest

    @property
    def loss(self) -> float:
        return F.nll_loss(self.probabilities.clamp_min(1e-12).log(), self.labels).item()

    def confusion(self) -> torch.Tensor:
        """(K, K) counts; row = true class, column = predicted class."""
        k = len(self.classes)
        return torch.bincount(self.labels * k + self.predictions, minlength=k * k).view(k, k)

    def per_class(self) -> dict[str, dict]:
        """precision, recall, F1 and support for each class (0 where undefined, as scikit-learn does)."""
        cm = self.confusion().double()
        tp, predicted, actual = cm.diag(), cm.sum(0), cm.sum(1)
        precision = torch.where(predicted > 0, tp / predicted.clamp_min(1), torch.zeros_like(tp))
        recall = torch.where(actual > 0, tp / actual.clamp_min(1), torch.zeros_like(tp))
        denom = precision + recall
        f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp_min(1e-12), torch.zeros_like(tp))
        return {
            c: {"precision": precision[i].item(), "recall": recall[i].item(), "f1": f1[i].item(),
                "support": int(actual[i].item())}
            for i, c in enumerate(self.classes)
        }

    def most_confident_mistakes(self, k: int = 16) -> torch.Tensor:
        """Indexes of the k wrong predictions made with the highest probability."""
        wrong = torch.nonzero(self.predictions != self.labels).flatten()
        confidence = self.probabilities[wrong].max(1).values
        return wrong[confidence.argsort(descending=True)[:k]]

    def to_dict(self) -> dict:
        return {
            "accuracy": self.accuracy,
            "n": self.n,
            "loss": self.loss,
            "per_class": self.per_class(),
            "confusion_matrix": self.confusion().tolist(),
            "classes": list(self.classes),
        }


def evaluate(clf: Classifier, ds: Dataset, tta: int = 0, batch_size: int = 1024) -> Evaluation:
    """Score `clf` on `ds`; the data's labels are matched to the model's classes by name."""
    ds = remap_labels(ds, clf.classes)
    probabilities = torch.softmax(clf.logits(ds.images, batch_size=batch_size, tta=tta), dim=1)
    return Evaluation(clf.classes, ds.labels, probabilities)


def format_report(ev: Evaluation) -> str:
    """The per-class table and confusion matrix as text."""
    width = max(9, *(len(c) for c in ev.classes))
    lines = [f"accuracy {ev.accuracy:.4f} on {ev.n} images (loss {ev.loss:.4f})", ""]
    lines.append(f"{'class':<{width}}  precision  recall     f1  support")
    for c, m in ev.per_class().items():
        lines.append(f"{c:<{width}}  {m['precision']:9.4f}  {m['recall']:6.4f}  {m['f1']:.4f}  {m['support']:7d}")
    lines += ["", "confusion matrix (rows: true, columns: predicted)"]
    cm = ev.confusion()
    cell = max(5, len(str(int(cm.max()))) + 1)
    lines.append(" " * width + "".join(f"{c[:cell - 1]:>{cell}}" for c in ev.classes))
    for c, row in zip(ev.classes, cm.tolist(), strict=True):
        lines.append(f"{c:<{width}}" + "".join(f"{v:>{cell}}" for v in row))
    return "\n".join(lines)


def write_figures(ev: Evaluation, ds: Dataset, out_dir: str | Path, k: int = 16) -> list[Path]:
    """confusion.png and mistakes.png (the most confidently wrong images) in out_dir."""
    out = Path(out_dir)
    paths = [plot_confusion(ev.confusion(), ev.classes, out / "confusion.png")]
    worst = ev.most_confident_mistakes(k)
    if len(worst):
        p = ev.probabilities[worst].max(1).values
        captions = [f"{ev.classes[t]} -> {ev.classes[q]}\n{pp:.2f}" for t, q, pp in
                    zip(ev.labels[worst].tolist(), ev.predictions[worst].tolist(), p.tolist(), strict=True)]
        paths.append(save_image_grid(ds.images[worst], captions, out / "mistakes.png", ncols=8,
                                     title="most confident mistakes (true -> predicted, probability)"))
    return paths
