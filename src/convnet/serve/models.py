"""The models a server holds: each file loaded once, named, with its card and its batchers.

Names: the file's stem, or its run folder's name when the file is `model.*` inside a run folder
(runs/cats/model.safetensors -> "cats"), or the folder's name when a run folder is given; a
name already taken gets -2, -3, ... in the order the files were given.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import torch

from convnet.engine.checkpoint import build_model
from convnet.engine.loading import load_classifier
from convnet.engine.predict import Ranking, rank
from convnet.engine.run_folder import RunFolder
from convnet.engine.tta import TTA_WEIGHTS
from convnet.errors import ConvnetError
from convnet.models.summary import summarize
from convnet.serve.batching import MicroBatcher
from convnet.serve.config import ServeConfig

MAX_HISTORY_BYTES = 1_000_000  # a history.csv is a few kB; a larger one is not shown


@dataclass
class ServedModel:
    name: str
    path: Path  # the model file
    clf: object  # engine.checkpoint.Classifier, or the ONNX runner with the same interface minus .model
    run_dir: Path | None  # the run folder beside the file (history.csv, curves.png), if there is one
    card: dict  # GET /api/model's body
    batchers: dict[int, MicroBatcher] = field(default_factory=dict)  # TTA level -> its /predict batcher

    @property
    def explainable(self) -> bool:
        """Whether Grad-CAM and feature maps can run: they need the PyTorch module, which an ONNX file has not."""
        return getattr(self.clf, "model", None) is not None

    @property
    def curves_path(self) -> Path | None:
        path = self.run_dir / "curves.png" if self.run_dir else None
        return path if path is not None and path.is_file() else None


def model_file_name(path: Path) -> str:
    """The name a model is served under before duplicates are told apart (see the module docstring)."""
    if path.is_dir():
        return path.resolve().name
    if path.stem == "model" and path.resolve().parent.name:
        return path.resolve().parent.name
    return path.stem


def _unique(names: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for name in names:
        candidate, n = name, 1
        while candidate in seen:
            n += 1
            candidate = f"{name}-{n}"
        seen.add(candidate)
        out.append(candidate)
    return out


def _number(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            continue
    return text or None


def read_history(run_dir: Path | None) -> list[dict] | None:
    """history.csv as a list of rows with numbers, or None when there is none or it is unreadable."""
    path = RunFolder(run_dir).history_path if run_dir else None
    if path is None or not path.is_file() or path.stat().st_size > MAX_HISTORY_BYTES:
        return None
    try:
        rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    return [{k: _number(v) for k, v in row.items() if isinstance(k, str) and isinstance(v, str)} for row in rows]


def _summary(clf) -> tuple[list[dict] | None, int | None]:
    """The architecture's layer table and parameter count. An ONNX file describes its model by
    name too, so the same table is drawn from a freshly built copy (its shapes and counts do not
    depend on the weights)."""
    info = clf.info
    model = getattr(clf, "model", None)
    if model is None:
        try:
            model = build_model(info)
        except ConvnetError:
            return None, None
    rows = summarize(model, (info.in_chans, *info.input_size))
    table = [{"layer": r.name, "output_shape": list(r.output_shape), "params": r.params} for r in rows]
    return table, sum(p.numel() for p in model.parameters())


def _card(m: ServedModel) -> dict:
    """GET /api/model's body (app.py documents its fields)."""
    info = m.clf.info
    summary, total = _summary(m.clf)
    return {
        "name": m.name,
        "format": model_format(m.path),
        "model": info.model,
        "model_args": info.model_args,
        "classes": list(info.classes),
        "input_size": list(info.input_size),
        "in_chans": info.in_chans,
        "mean": list(info.mean),
        "std": list(info.std),
        "metrics": info.metrics,
        "data_source": info.data_source,
        "summary": summary,
        "total_params": total,
        "curves": f"/api/model/curves.png?model={quote(m.name)}" if m.curves_path else None,
        "history": read_history(m.run_dir),
        "explainable": m.explainable,
    }


def model_format(path: Path) -> str:
    return "onnx" if path.suffix.lower() == ".onnx" else "safetensors"


def _ranker(clf, tta: int):
    """A batch of uint8 (C, H, W) images -> each one's full ranking (every class, most probable first):
    `rank` itself, so an answer is what `convnet predict` gives; each request keeps its own top k."""

    def run(images: list[torch.Tensor]) -> list[Ranking]:
        return rank(clf, torch.stack(images), k=len(clf.classes), tta=tta)

    return run


def load_models(paths: list[str | Path], config: ServeConfig) -> list[ServedModel]:
    """Load every model once, in the order given.

    Raises:
        CheckpointError (or another ConvnetError): the first file that is not a model convnet
            can run, in one sentence.
    """
    paths = [Path(p) for p in paths]
    names = _unique([model_file_name(p) for p in paths])
    served = []
    for name, path in zip(names, paths, strict=True):
        clf = load_classifier(path)
        run_dir = path if path.is_dir() else path.parent
        run_dir = run_dir if (run_dir / "history.csv").is_file() or (run_dir / "curves.png").is_file() else None
        model_path = RunFolder(path).model_path if path.is_dir() else path
        m = ServedModel(name, model_path, clf, run_dir, card={})
        m.card = _card(m)
        m.batchers = {tta: MicroBatcher(_ranker(clf, tta), config.max_batch, config.batch_wait_ms / 1000) for tta in TTA_WEIGHTS}
        served.append(m)
    return served
