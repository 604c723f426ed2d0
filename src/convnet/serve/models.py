"""The models a server holds: each file loaded once, named, with its card and its batchers.

A run folder's history.csv and curves.png are read without following links, each time they are
shown: a folder whose curves.png links to /etc/passwd must not publish it (`read_run_file`).

Names: the file's stem, or its run folder's name when the file is `model.*` inside a run folder
(runs/cats/model.safetensors -> "cats"), or the folder's name when a run folder is given; a
name already taken gets -2, -3, ... in the order the files were given.
"""
from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import torch

from convnet.errors import ConvnetError
from convnet.files import open_regular
from convnet.formats import parse_scalar
from convnet.inference.loading import RunnableModel, load_classifier
from convnet.inference.model_file import Classifier, build_model
from convnet.inference.predict import Ranking, rank
from convnet.inference.run_files import RunFiles
from convnet.inference.tta import TTA_WEIGHTS
from convnet.models.summary import summarize
from convnet.serve.batching import MicroBatcher
from convnet.serve.config import ServeConfig

MAX_HISTORY_BYTES = 1_000_000  # a history.csv is a few kB; a larger one is not shown
MAX_CURVES_BYTES = 20_000_000  # a curves.png is tens of kB; a larger one is not shown


@dataclass
class ServedModel:
    name: str
    path: Path  # the model file
    clf: RunnableModel  # a Classifier (PyTorch), or an OnnxClassifier: the same interface minus .model
    run_dir: Path  # the folder of the file, or the run folder given: where history.csv and curves.png would be
    card: dict  # GET /api/model's body
    batchers: dict[int, MicroBatcher] = field(default_factory=dict)  # TTA level -> its /predict batcher

    @property
    def torch_classifier(self) -> Classifier | None:
        """The model with its PyTorch module, which Grad-CAM and feature maps need; None for an ONNX file."""
        return self.clf if isinstance(self.clf, Classifier) else None

    @property
    def explainable(self) -> bool:
        """Whether Grad-CAM and feature maps can run (see `torch_classifier`)."""
        return self.torch_classifier is not None

    def curves(self) -> bytes | None:
        """The run's curves.png as it is now, or None when there is none (or it is a link, or too large)."""
        return read_run_file(RunFiles(self.run_dir).curves_path, MAX_CURVES_BYTES)


def read_run_file(path: Path, max_bytes: int) -> bytes | None:
    """The bytes of a run-folder file, or None when it is absent, a link, not a regular file or over `max_bytes`.

    Links are not followed: the server would publish whatever they point to. `files.open_regular`
    opens without blocking and checks the file it opened, so a FIFO is refused, not waited on, and
    the check and the read see the same file.
    """
    try:
        fd = open_regular(path)
    except (OSError, ValueError):  # absent, a link, not a regular file, unreadable; ValueError: a NUL in the name
        return None
    with os.fdopen(fd, "rb") as f:
        if os.fstat(fd).st_size > max_bytes:
            return None
        data = f.read(max_bytes + 1)  # the file may have grown since fstat
    return data if len(data) <= max_bytes else None


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


def read_history(run_dir: Path) -> list[dict] | None:
    """history.csv as a list of rows with numbers, or None when there is none or it is unreadable (see
    `read_run_file`)."""
    data = read_run_file(RunFiles(run_dir).history_path, MAX_HISTORY_BYTES)
    if data is None:
        return None
    try:
        rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"))))
    except (UnicodeDecodeError, csv.Error):
        return None
    # An empty cell (a metric an epoch did not record) is null, not "".
    return [{k: parse_scalar(v) if v else None for k, v in row.items() if isinstance(k, str) and isinstance(v, str)}
            for row in rows]


def _summary(m: ServedModel) -> tuple[list[dict] | None, int | None]:
    """The architecture's layer table and parameter count. An ONNX file describes its model by
    name too, so the same table is drawn from a freshly built copy (its shapes and counts do not
    depend on the weights)."""
    info = m.clf.info
    torch_classifier = m.torch_classifier
    if torch_classifier is not None:
        model = torch_classifier.model
    else:
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
    summary, total = _summary(m)
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
        "curves": f"/api/model/curves.png?model={quote(m.name)}" if m.curves() is not None else None,
        "history": read_history(m.run_dir),
        "explainable": m.explainable,
    }


def model_format(path: Path) -> str:
    return "onnx" if path.suffix.lower() == ".onnx" else "safetensors"


def _ranker(clf: RunnableModel, tta: int):
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
    files = [Path(p) for p in paths]
    names = _unique([model_file_name(p) for p in files])
    served = []
    for name, path in zip(names, files, strict=True):
        clf = load_classifier(path)
        run_dir = path if path.is_dir() else path.parent
        model_path = RunFiles(path).model_path if path.is_dir() else path
        m = ServedModel(name, model_path, clf, run_dir, card={})
        m.card = _card(m)
        m.batchers = {tta: MicroBatcher(_ranker(clf, tta), config.max_batch, config.batch_wait_ms / 1000)
                      for tta in TTA_WEIGHTS}
        served.append(m)
    return served
