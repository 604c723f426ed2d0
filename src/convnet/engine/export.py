"""Exporting a trained model to run without PyTorch: an ONNX file, or a Triton model repository.

ONNX (`export_onnx`): the format described in engine/onnx_model.py: uint8 (batch, C, H, W) in,
normalised inside the graph (data.normalize, traced once), float32 logits out, the model file's
ModelInfo in metadata_props. It is written by torch's torch.export-based exporter (`dynamo=True`,
with onnxscript): the default and maintained exporter since torch 2.9, whose TorchScript
predecessor is deprecated. Every registered model exports with it, in eval mode (BatchNorm
with its running statistics, airnet's whitening weights as the constants they are after training).

Triton (`export_triton`): a model repository that Triton Inference Server, or KServe in front
of it, serves as it is:

    OUT/NAME/config.pbtxt     platform onnxruntime_onnx, uint8 input, fp32 output, dynamic batching
    OUT/NAME/labels.txt       one class name a line, in output order (the output's label_filename)
    OUT/NAME/1/model.onnx     the ONNX file above (version 1)
"""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import shutil
import stat
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from convnet.data.normalize import normalize
from convnet.engine.checkpoint import Classifier
from convnet.engine.onnx_model import BATCH_DIM, EXTRA, INPUT_NAME, ONNX_FORMAT, OUTPUT_NAME, import_onnx
from convnet.errors import ConfigError
from convnet.files import atomic_write

# Triton's largest batch for one request or one dynamically batched run; the ONNX graph takes any.
MAX_BATCH_SIZE = 256
_MAX_INT32 = 2**31 - 1
# Exported logits must agree with PyTorch's to this (tests/engine/test_onnx_parity.py checks 1e-4
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
    """Write `clf` as an ONNX file (format in engine/onnx_model.py), checked before it is renamed into place.

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
    _check_destination(out, force, writes="a regular file")
    proto = onnx_proto(clf)
    with _writing(out):
        atomic_write(out, lambda tmp: Path(tmp).write_bytes(proto.SerializeToString()))
    return out


def onnx_proto(clf: Classifier):
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
        raise RuntimeError(f"the exported graph disagrees with PyTorch by {np.abs(got - want).max():.3g}")  # a bug of the exporter or of ours


def export_triton(clf: Classifier, out: str | Path, name: str, force: bool = False, max_batch_size: int = MAX_BATCH_SIZE) -> Path:
    """Write a Triton model repository entry `out/name/` (layout in the module doc).

    The folder is built beside its destination and renamed into place, so a crash never leaves
    a half-written model that Triton would try to load.

    Returns:
        The model's folder, out/name.
    Raises:
        ConfigError: a bad name or batch size, `out/name` exists without `force` or is not a folder
            (a file, or a symbolic link even to a folder), or the onnx extra is missing.
    """
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name):
        raise ConfigError(f"The Triton model name {name!r} must be letters, digits, '_', '.' or '-'; pass --name.")
    if not 1 <= max_batch_size <= _MAX_INT32:
        raise ConfigError(f"--max-batch-size must be between 1 and {_MAX_INT32} (Triton's field is an int32), got {max_batch_size}.")
    out = Path(out)
    final = out / name
    _check_destination(final, force, writes="a folder")
    proto = onnx_proto(clf)
    with _writing(final):
        out.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=out, prefix=f".{name}.", suffix=".tmp"))
        try:
            (staging / "1").mkdir()
            (staging / "1" / "model.onnx").write_bytes(proto.SerializeToString())
            (staging / "labels.txt").write_text("".join(f"{c}\n" for c in clf.classes))
            (staging / "config.pbtxt").write_text(triton_config(clf, name, max_batch_size))
            _replace_folder(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return final


def triton_config(clf: Classifier, name: str, max_batch_size: int) -> str:
    """config.pbtxt: Triton's ModelConfig in protobuf text format. dims leave out the batch
    dimension, which Triton adds because max_batch_size > 0."""
    c, (h, w) = clf.info.in_chans, clf.info.input_size
    return f"""name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: {max_batch_size}
input [
  {{
    name: "{INPUT_NAME}"
    data_type: TYPE_UINT8
    dims: [ {c}, {h}, {w} ]
  }}
]
output [
  {{
    name: "{OUTPUT_NAME}"
    data_type: TYPE_FP32
    dims: [ {len(clf.classes)} ]
    label_filename: "labels.txt"
  }}
]
dynamic_batching {{ }}
"""


def _replace_folder(new: Path, final: Path) -> None:
    """Rename `new` to `final`; an existing `final` (forced) is moved aside first and removed after."""
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".old"))
        os.replace(final, old / final.name)
    os.replace(new, final)
    if old is not None:
        shutil.rmtree(old)


def _check_destination(path: Path, force: bool, writes: str) -> None:
    """Refuse, before the export's work, a destination that exists (without `force`), that is not
    what the export writes there (`writes`: "a regular file" or "a folder"), or that cannot be made.

    --force replaces only what an export could have written: never a FIFO, socket or device (a
    rename over /dev/null would replace the device with a file), and never a symbolic link, which
    the export does not follow: whatever it points to stays as it is.
    """
    if "\0" in str(path):
        raise ConfigError(f"The output path {str(path)!r} has a NUL character, which no file name can hold; pass another --out.")
    kind = _kind(path)
    if kind is not None and kind != writes:
        raise ConfigError(f"{path} is {kind}, not {writes} that --force could replace; remove it yourself or pass another --out.")
    if kind is not None and not force:
        raise ConfigError(f"{path} already exists; pass --force to replace it, or --out to write elsewhere.")
    above = next((p for p in path.parents if p.exists()), None)  # the folder it would be made in
    if above is not None and not above.is_dir():
        raise ConfigError(f"Cannot write {path}: {above} is a file, not a folder; pass an --out elsewhere.")


_KINDS = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def _kind(path: Path) -> str | None:
    """What is at `path` in a few words, a symbolic link as itself (not followed); None for nothing."""
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    return next((words for test, words in _KINDS if test(mode)), "a special file")


@contextlib.contextmanager
def _writing(path: Path):
    """What the file system refuses (permissions, a full disk) as one sentence."""
    try:
        yield
    except OSError as e:
        raise ConfigError(f"Cannot write {path} ({e.strerror or e}); pass an --out in a folder you can write to.") from None


def _import_exporter():
    """onnx and onnxruntime, after checking for onnxscript (torch's exporter imports it) and a torch that has the exporter."""
    onnx, ort = import_onnx("Exporting to ONNX")
    if importlib.util.find_spec("onnxscript") is None:
        raise ConfigError(f"Exporting to ONNX needs onnxscript, which is not installed; {EXTRA}.")
    if torch.torch_version.TorchVersion(torch.__version__) < "2.6":
        raise ConfigError(f"Exporting to ONNX needs torch 2.6 or newer (its torch.export-based exporter); this is torch {torch.__version__}.")
    return onnx, ort


@contextlib.contextmanager
def _quiet_exporter():
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
