"""A Triton model repository entry: a folder that Triton Inference Server, or KServe in front of
it, serves as it is.

    OUT/NAME/config.pbtxt     platform onnxruntime_onnx, uint8 input, fp32 output, dynamic batching
    OUT/NAME/labels.txt       one class name a line, in output order (the output's label_filename)
    OUT/NAME/1/model.onnx     the ONNX file of export/onnx.py (version 1)
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from convnet.errors import ConfigError
from convnet.export.destination import check_destination, writing
from convnet.export.onnx import onnx_proto
from convnet.inference.model_file import Classifier
from convnet.inference.onnx_model import INPUT_NAME, OUTPUT_NAME

# Triton's largest batch for one request or one dynamically batched run; the ONNX graph takes any.
MAX_BATCH_SIZE = 256
_MAX_INT32 = 2**31 - 1


def export_triton(clf: Classifier, out: str | Path, name: str, force: bool = False,
                  max_batch_size: int = MAX_BATCH_SIZE) -> Path:
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
        raise ConfigError(f"--max-batch-size must be between 1 and {_MAX_INT32} (Triton's field is an int32), "
                          f"got {max_batch_size}.")
    out = Path(out)
    final = out / name
    check_destination(final, force, writes="a folder")
    proto = onnx_proto(clf)
    with writing(final):
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


