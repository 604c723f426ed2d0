"""Running an exported .onnx model with onnxruntime, as `Classifier` runs a model.safetensors.

Format ("convnet.onnx/1", written by `export.onnx.export_onnx`): an ONNX model with

    input   "images"  uint8 (batch, C, H, W), the batch dimension dynamic
    output  "logits"  float32 (batch, num_classes)
    metadata_props  "format":  "convnet.onnx/1"
                    "convnet": JSON of `ModelInfo`, exactly as in model.safetensors

The graph normalises inside, `(x / 255 - mean) / std` per channel (data.normalize), so any
runtime feeds it raw pixels. An .onnx file is untrusted input like a model file: onnxruntime
runs no pickles and, without a custom-op library registered, no foreign code; on top of that
`load_onnx` refuses in one sentence what would fail later or read other files: data that is not
ONNX, no convnet metadata, an input or output that is not the one above, operators outside the
standard ONNX domain, a tensor anywhere in the model (initializers, sparse tensors, node
attributes, subgraphs, functions) stored in an external file.

A hostile graph can still ask for unbounded work from a few bytes (chained MatMuls of a
ConstantOfShape). So onnxruntime folds no constants while it creates the session (the one step
that could not be stopped), each run is stopped past a time limit that the file's size justifies
(SLOW_FLOPS below), and `load_onnx` runs a probe batch of 2 black images: logits that are not
float32 (2, num_classes) and finite refuse the file at load, as they refuse any later batch.
"""
from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from convnet.errors import CheckpointError, ConfigError
from convnet.formats import MAX_MODEL_BYTES, ModelInfo, check_model_info
from convnet.inference.model_file import Classifier
from convnet.inference.tta import tta_logits

ONNX_FORMAT = "convnet.onnx/1"
INPUT_NAME, OUTPUT_NAME = "images", "logits"
BATCH_DIM = "batch"  # the name of the dynamic first dimension of the input and the output
# The standard operator set: a node of another domain (a custom op) is refused rather than looked up.
STANDARD_DOMAINS = ("", "ai.onnx")
_DO = "pass a .onnx file written by `convnet export`"
EXTRA = "pip install 'convnet[onnx]'"
# A run of N images may take MIN_RUN_S + N * 2 * file bytes * H * W / SLOW_FLOPS seconds. No convnet
# model does more than 2 float operations per byte of its file per input pixel (each weight used at
# most once per pixel); at SLOW_FLOPS, far below any CPU's, a genuine model always ends within the
# limit, and a small file asking for hours of work is stopped.
SLOW_FLOPS = 1e9  # float operations per second
MIN_RUN_S = 2.0  # the floor for small graphs, whose time is onnxruntime's own overhead


def import_onnx(needed_for: str):
    """The modules onnx and onnxruntime, from the optional extra.

    Raises:
        ConfigError: one is missing; the sentence starts with `needed_for` and names the extra.
    """
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise ConfigError(f"{needed_for} needs {e.name}, which is not installed; {EXTRA}.") from None
    return onnx, onnxruntime


class OnnxClassifier:
    """An exported model run by onnxruntime, with the interface of `Classifier` that predict,
    evaluate and serve use: `info`, `classes`, `to_input`, `logits`, `predict`.

    Every batch's logits are checked: float32 (batch, num_classes) and finite, else CheckpointError.
    """

    def __init__(self, session, info: ModelInfo, name: str, file_bytes: int):
        self.session = session  # onnxruntime.InferenceSession
        self.info = info
        self.name = name  # the file, for error messages
        self._seconds_per_image = 2 * file_bytes * info.input_size[0] * info.input_size[1] / SLOW_FLOPS
        self._ort = import_onnx("Running .onnx models")[1]

    # Image reading and the softmax read only `info`, `to_input` and `logits`: one definition serves both kinds of
    # model.
    classes = Classifier.classes
    to_input = Classifier.to_input
    predict = Classifier.predict

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        n, k = len(x), len(self.info.classes)
        options = self._ort.RunOptions()
        options.log_severity_level = 4  # errors come back as exceptions, said below in one sentence
        limit = MIN_RUN_S + n * self._seconds_per_image
        timer = threading.Timer(limit, setattr, (options, "terminate", True))  # onnxruntime stops between nodes
        timer.start()
        try:
            logits = self.session.run([OUTPUT_NAME], {INPUT_NAME: x.contiguous().numpy()}, options)[0]
        except Exception as e:  # a graph that passed the checks of `load_onnx` and still fails: say so in one sentence
            if options.terminate:
                raise CheckpointError(f"{self.name} ran longer than {limit:.0f} s on a batch of {n} images, far longer "
                                      f"than a model of its size needs; {_DO}.") from None
            raise CheckpointError(f"{self.name} failed on a batch of {n} images ({_first_line(e)}); {_DO}.") from None
        finally:
            timer.cancel()
        if logits.dtype != np.float32 or logits.shape != (n, k):
            got = f"{logits.dtype} logits of shape {list(logits.shape)}"
            raise CheckpointError(f"{self.name} gave {got} for a batch of {n} images, where its {k} classes need "
                                  f"float32 [{n}, {k}]; {_DO}.")
        if not np.isfinite(logits).all():
            raise CheckpointError(f"{self.name} gave logits that are not finite (NaN or infinity) "
                                  f"for a batch of {n} images; {_DO}.")
        return torch.from_numpy(logits)

    @torch.no_grad()
    def logits(self, images: torch.Tensor, batch_size: int = 512, tta: int = 0) -> torch.Tensor:
        """uint8 (N, C, H, W) -> float32 logits (N, num_classes), evaluated in batches.

        The TTA views (inference.tta) are cut from the uint8 batch before the graph normalises it:
        flips and reflect-shifts move pixels and the normalisation is per channel, so they commute
        and the logits are those of `Classifier.logits`.
        """
        if (images.dtype != torch.uint8 or images.dim() != 4
                or tuple(images.shape[1:]) != (self.info.in_chans, *self.info.input_size)):
            raise ValueError(f"images must be uint8 (N, {self.info.in_chans}, {self.info.input_size[0]}, "
                             f"{self.info.input_size[1]}), got {images.dtype} {tuple(images.shape)}")
        if len(images) == 0:
            raise ValueError("no images to evaluate")
        images = images.cpu()
        return torch.cat([tta_logits(self._run, images[i : i + batch_size], tta)
                          for i in range(0, len(images), batch_size)])


def load_onnx(path: str | Path) -> OnnxClassifier:
    """Open an .onnx file written by `convnet export` (format in the module doc), checked first.

    Raises:
        CheckpointError: the file is not a usable convnet ONNX model; one sentence.
        ConfigError: onnx or onnxruntime is not installed.
    """
    onnx, ort = import_onnx("Running .onnx models")
    path = Path(path)
    if not path.is_file():  # also refuses FIFOs and devices, which reading could block on
        raise CheckpointError(f"No ONNX model at {path}; {_DO}.")
    if path.stat().st_size > MAX_MODEL_BYTES:
        raise CheckpointError(f"{path} is larger than {MAX_MODEL_BYTES // 1024**3} GiB, "
                              f"far more than any convnet model; {_DO}.")
    # Read once: the bytes that are checked are the bytes onnxruntime runs, and it never opens the path (or files
    # beside it) itself.
    data = path.read_bytes()
    try:
        model = onnx.load_model_from_string(data)
    except Exception as e:  # protobuf's DecodeError and friends: the reason is in the message
        raise CheckpointError(f"{path} is not a readable ONNX file ({type(e).__name__}); {_DO}.") from None
    info = _read_info(model, path)
    _check_graph(model, info, path, onnx)
    options = ort.SessionOptions()
    # its errors come back as exceptions, said here in one sentence; its log lines would be a second one
    options.log_severity_level = 4
    try:
        # Constant folding computes constant subgraphs while the session is created, where no time limit can stop it.
        session = ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"],
                                       disabled_optimizers=["ConstantFolding"])
    except Exception as e:  # onnxruntime's own errors have no common base class; its message names the node
        raise CheckpointError(f"{path} is an ONNX model that onnxruntime cannot load ({_first_line(e)}); "
                              f"{_DO}.") from None
    clf = OnnxClassifier(session, info, str(path), len(data))
    # the probe: refuses at load what would fail on every batch
    clf.logits(torch.zeros(2, info.in_chans, *info.input_size, dtype=torch.uint8))
    return clf


def _first_line(e: Exception, limit: int = 200) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _read_info(model, path: Path) -> ModelInfo:
    """The ModelInfo in the file's metadata_props, checked as a model.safetensors's metadata is."""
    meta: dict[str, str] = {}
    for prop in model.metadata_props:
        if prop.key in meta:
            raise CheckpointError(f"{path} gives the metadata key {prop.key[:60]!r} twice; {_DO}.")
        meta[prop.key] = prop.value
    if meta.get("format") != ONNX_FORMAT or "convnet" not in meta:
        raise CheckpointError(f"{path} is an ONNX file but not a convnet model (no '{ONNX_FORMAT}' metadata); {_DO}.")
    try:
        info = json.loads(meta["convnet"])
    except ValueError as e:
        raise CheckpointError(f"{path} has damaged convnet metadata ({e}); {_DO}.") from None
    except RecursionError:
        raise CheckpointError(f"{path} has convnet metadata nested far too deeply to be convnet's; {_DO}.") from None
    if not isinstance(info, dict):
        raise CheckpointError(f"{path} has convnet metadata that is not a JSON object; {_DO}.")
    try:
        check_model_info(info, path)
    except CheckpointError as e:  # its sentence ends "; <what to pass instead>", advice for model.safetensors files
        raise CheckpointError(f"{str(e).rsplit('; ', 1)[0]}; {_DO}.") from None
    return ModelInfo.from_dict(info)


def _dims(value_info) -> list:
    """A graph input's or output's shape: ints for fixed dimensions, names (str) for symbolic ones."""
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value_info.type.tensor_type.shape.dim]


def _dtype(value_info, onnx) -> str:
    elem_type = value_info.type.tensor_type.elem_type
    return (onnx.TensorProto.DataType.Name(elem_type).lower() if elem_type in onnx.TensorProto.DataType.values()
            else f"type {elem_type}")


def _is_batched(value_info, shape: list[int]) -> bool:
    dims = _dims(value_info)
    return len(dims) == 1 + len(shape) and isinstance(dims[0], str) and dims[1:] == shape


def _tensors(message, onnx) -> Iterator:
    """Every TensorProto in an ONNX message, however deep: initializers, the values and indices of
    sparse tensors, node attributes, and those of subgraphs and functions."""
    for field, value in message.ListFields():
        if field.type != field.TYPE_MESSAGE:
            continue
        for item in (value,) if hasattr(value, "ListFields") else value:  # one message, or a repeated field of them
            if isinstance(item, onnx.TensorProto):
                yield item
            else:
                yield from _tensors(item, onnx)


def _check_graph(model, info: ModelInfo, path: Path, onnx) -> None:
    graph = model.graph
    initializer_names = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializer_names]
    c, (h, w) = info.in_chans, info.input_size
    # The batch dimension is symbolic (a name, or none): a fixed one would fail on any other batch size.
    if (len(inputs) != 1 or inputs[0].name != INPUT_NAME
            or inputs[0].type.tensor_type.elem_type != onnx.TensorProto.UINT8 or not _is_batched(inputs[0], [c, h, w])):
        got = ", ".join(f"{i.name[:40]!r} {_dtype(i, onnx)} {_dims(i)}" for i in inputs[:3]) or "none"
        raise CheckpointError(f"{path} does not take one uint8 input {INPUT_NAME!r} of shape [batch, {c}, {h}, {w}] as "
                              f"its metadata says (it takes {got}); {_DO}.")
    outputs = list(graph.output)
    k = len(info.classes)
    if (len(outputs) != 1 or outputs[0].name != OUTPUT_NAME
            or outputs[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT or not _is_batched(outputs[0], [k])):
        raise CheckpointError(f"{path} does not give one float32 output {OUTPUT_NAME!r} of shape [batch, {k}] for its "
                              f"{k} classes; {_DO}.")
    if any(t.data_location == onnx.TensorProto.EXTERNAL or t.external_data for t in _tensors(model, onnx)):
        raise CheckpointError(f"{path} keeps tensors in external files, which convnet does not read; {_DO}.")
    # A model-local function is called as a node of its own domain, so this refuses those too.
    foreign = sorted({n.domain for n in graph.node} - set(STANDARD_DOMAINS))
    if foreign:
        raise CheckpointError(f"{path} uses operators outside the standard ONNX set "
                              f"(domain {foreign[0][:60]!r}); {_DO}.")
    # Loop, Scan and If carry subgraphs: a feed-forward classifier has none, and a loop could run for ever.
    looping = next((n.op_type for n in graph.node
                    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in n.attribute)),
                   None)
    if looping is not None:
        raise CheckpointError(f"{path} has control flow ({looping[:40]}), which convnet's exports never have; {_DO}.")
