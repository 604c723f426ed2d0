"""Exporting a trained model to run without PyTorch: an ONNX file (Triton's entry: export/triton.py).

ONNX (`export_onnx`): the format described in inference/onnx_model.py: uint8 (batch, C, H, W) in,
normalised inside the graph (data.normalize, traced once), float32 logits out, the model file's
ModelInfo in metadata_props. It is written by torch's torch.export-based exporter (`dynamo=True`,
with onnxscript): the default and maintained exporter since torch 2.9, whose TorchScript
predecessor is deprecated. Every registered model exports with it, in eval mode (BatchNorm
with its running statistics, airnet's whitening weights as the constants they are after training).
"""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn as nn

from convnet.data.normalize import normalize
from convnet.errors import ConfigError
from convnet.export.destination import check_destination, writing
from convnet.files import atomic_write
from convnet.inference.model_file import Classifier
from convnet.inference.onnx_model import BATCH_DIM, EXTRA, INPUT_NAME, ONNX_FORMAT, OUTPUT_NAME, import_onnx

if TYPE_CHECKING:  # onnx is optional (the onnx extra): imported when an export runs
    import onnx

# Exported logits must agree with PyTorch's to this (tests/export/test_onnx_parity.py checks 1e-4
# on real images; this guards every export against a silently wrong graph).
_CHECK_TOLERANCE = 1e-3


class RawPixels(nn.Module):
    """The model with its normalisation in front: uint8 (N, C, H, W) -> logits (N, num_classes)."""

    def __init__(self, model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.model, self.mean, self.std = model, mean, std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(normalize(images, self.mean, self.std))


def export_onnx(clf: Classifier, out: str | Path, force: bool = False) -> Path:
    """Write `clf` as an ONNX file (format in inference/onnx_model.py), checked before it is renamed into place.

    Args:
        out: the .onnx file to write.
        force: replace an existing file (otherwise refused).
    Returns:
        The path written.
    Raises:
        ConfigError: `out` exists without `force`, or is not a regular file (a FIFO, device or
            symbolic link, replaced by nothing), or onnx / onnxscript / onnxruntime is missing.
    """
    out = Path(out)
    check_destination(out, force, writes="a regular file")
    proto = onnx_proto(clf)

    def write(tmp: str) -> None:
        Path(tmp).write_bytes(proto.SerializeToString())

    with writing(out):
        atomic_write(out, write)
    return out


def onnx_proto(clf: Classifier) -> onnx.ModelProto:
    """`clf` as a checked onnx.ModelProto with convnet's metadata (what `export_onnx` writes).

    The export runs on the CPU: a model on another device is moved there.
    """
    onnx, ort = _import_exporter()
    info = clf.info
    model = RawPixels(clf.model, info.mean, info.std).cpu().eval()
    example = torch.zeros(2, info.in_chans, *info.input_size, dtype=torch.uint8)
    with _quiet_exporter():
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: torch.export.Dim(BATCH_DIM)},),
            verbose=False,
        )
    assert program is not None  # None only for the legacy exporter (dynamo=False)
    proto = program.model_proto
    proto.producer_name = "convnet"
    for key, value in (("format", ONNX_FORMAT), ("convnet", info.to_json())):
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto, full_check=True)
    _check_against_torch(proto, model, example, ort)
    return proto


def _check_against_torch(proto, model: nn.Module, example: torch.Tensor, ort) -> None:
    """Run the graph in onnxruntime on a few random images, with a batch size other than the traced one."""
    x = torch.randint(0, 256, (3, *example.shape[1:]), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
    with torch.no_grad():
        want = model(x).float().numpy()
    if not np.allclose(got, want, atol=_CHECK_TOLERANCE, rtol=_CHECK_TOLERANCE):
        # a bug of the exporter or of ours
        raise RuntimeError(f"the exported graph disagrees with PyTorch by {np.abs(got - want).max():.3g}")


def _import_exporter():
    """onnx and onnxruntime, after checking for onnxscript (torch's exporter imports it) and a torch that has the
    exporter."""
    onnx, ort = import_onnx("Exporting to ONNX")
    if importlib.util.find_spec("onnxscript") is None:
        raise ConfigError(f"Exporting to ONNX needs onnxscript, which is not installed; {EXTRA}.")
    if torch.torch_version.TorchVersion(torch.__version__) < "2.6":
        raise ConfigError("Exporting to ONNX needs torch 2.6 or newer (its torch.export-based exporter); "
                          f"this is torch {torch.__version__}.")
    return onnx, ort


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter logs what it skips (torchvision's operators) and warns about its own internals:
    nothing a user can act on, so neither reaches the command's output."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
