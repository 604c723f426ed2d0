"""Classifying image files: folders expanded, each file answered on its own."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import torch

from convnet.data.images import is_image_file
from convnet.engine.checkpoint import Classifier
from convnet.errors import DataError


@dataclass(frozen=True)
class FileResult:
    path: str
    predictions: list[tuple[str, float]] | None = None  # (class, probability), most probable first
    error: str | None = None

    def to_dict(self) -> dict:
        if self.error is not None:
            return {"path": self.path, "error": self.error}
        return {"path": self.path, "predictions": [{"class": c, "probability": p} for c, p in self.predictions]}


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders replaced by the image files below them (sorted)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and is_image_file(f))
        else:
            out.append(p)
    return out


def predict_files(clf: Classifier, paths: Iterable[str | Path], top_k: int = 3, tta: int = 0, batch_size: int = 256) -> Iterator[FileResult]:
    """Top-k classes per file. A file that cannot be read yields an error result; the rest still run."""
    top_k = max(1, min(top_k, len(clf.classes)))
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
        probs = iter(clf.predict(torch.stack(good), tta=tta) if good else [])
        for f, x, err in loaded:
            if err is not None:
                yield FileResult(str(f), error=err)
                continue
            p, idx = next(probs).topk(top_k)
            yield FileResult(str(f), [(clf.classes[i], round(v, 6)) for i, v in zip(idx.tolist(), p.tolist())])
