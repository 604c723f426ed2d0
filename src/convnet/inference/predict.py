"""Top-k classes: of images in memory (tensors, Pillow images), and of files, each answered on its own."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from convnet.data.images import find_image_files
from convnet.errors import DataError
from convnet.inference.loading import RunnableModel

Ranking = list[tuple[str, float]]  # (class, probability), most probable first


@dataclass(frozen=True)
class FileResult:
    path: str
    predictions: Ranking | None = None
    error: str | None = None

    def to_dict(self) -> dict:
        if self.predictions is None:
            return {"path": self.path, "error": self.error}
        return {"path": self.path, "predictions": [{"class": c, "probability": p} for c, p in self.predictions]}


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders replaced by the image files below them (sorted)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files, others = find_image_files(p)  # others (FIFOs, loops...) get their own error line
            out += [p / name for name in sorted(files + others)]
        else:
            out.append(p)
    return out


def rank(clf: RunnableModel, images, k: int = 3, tta: int = 0) -> list[Ranking]:
    """The k most probable classes of each image.

    Args:
        images: a uint8 (N, C, H, W) tensor at the model's size, or a list of Pillow images,
            uint8 (C, H, W) tensors or paths (each converted as `Classifier.to_input` does).
        k: clipped to 1..number of classes.
    Returns:
        One ranking per image, probabilities rounded to 6 decimals.
    """
    k = max(1, min(k, len(clf.classes)))
    p, idx = clf.predict(images, tta=tta).topk(k, dim=1)
    return [[(clf.classes[i], round(v, 6)) for i, v in zip(row_i, row_p, strict=True)]
            for row_i, row_p in zip(idx.tolist(), p.tolist(), strict=True)]


def predict_files(clf: RunnableModel, paths: Iterable[str | Path], top_k: int = 3, tta: int = 0,
                  batch_size: int = 256) -> Iterator[FileResult]:
    """Top-k classes per file. A file that cannot be read yields an error result; the rest still run."""
    files = expand_paths(paths)
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        loaded: list[tuple[Path, torch.Tensor | None, str | None]] = []
        for f in chunk:
            try:
                loaded.append((f, clf.to_input(f), None))
            except DataError as e:
                loaded.append((f, None, str(e)))
        good = [x for _, x, _ in loaded if x is not None]
        rankings = iter(rank(clf, torch.stack(good), top_k, tta) if good else [])
        for f, _, err in loaded:
            yield FileResult(str(f), error=err) if err is not None else FileResult(str(f), next(rankings))
