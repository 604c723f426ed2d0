"""Networks built from a spec plan, and convnet model files read without torch.

`convnet.spec.plan` is the one description both engines build from: layer i of the plan is
`layers.i` here and in the torch `SequentialNet`, so a model file written by `convnet train`
loads into this engine name for name, and the two give the same logits.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from convnet.errors import CheckpointError, DataError, SpecError
from convnet.formats import MAX_MODEL_BYTES, check_weights_match, read_model_arrays
from convnet.scratch import layers as L
from convnet.scratch.losses import softmax
from convnet.spec import TUTORIAL_SPEC, Layer, plan


class SequentialNet(L.Module):
    """The NumPy twin of `models.sequential.SequentialNet`: a `layers` stack of plan layers."""

    def __init__(self, layers: list[L.Module], head_start: int, num_classes: int, in_chans: int):
        self.layers = L.Sequential(*layers)
        self.head_start = head_start  # index of the flatten: layers before it are the features
        self.num_classes = num_classes
        self.in_chans = in_chans

    @property
    def dtype(self) -> np.dtype:
        return self.parameters()[0].data.dtype

    def forward(self, x: np.ndarray) -> np.ndarray:
        """(N, C, H, W) normalized images -> (N, num_classes) logits, computed in the net's dtype."""
        return self.layers.forward(np.asarray(x, dtype=self.dtype))

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return self.layers.backward(grad)


def layer_from_plan(layer: Layer, dtype, rng: np.random.Generator) -> L.Module:
    """The scratch layer for one planned layer (the same mapping as `models.sequential._module`)."""
    a = layer.args
    if layer.kind == "conv2d":
        return L.Conv2d(a["in_channels"], a["out_channels"], a["kernel"], a["stride"], a["padding"],
                        dtype=dtype, rng=rng)
    if layer.kind == "linear":
        return L.Linear(a["in_features"], a["out_features"], dtype=dtype, rng=rng)
    if layer.kind in ("maxpool2d", "avgpool2d"):
        pool = L.MaxPool2d if layer.kind == "maxpool2d" else L.AvgPool2d
        return pool(a["kernel"], a["stride"])
    if layer.kind in ("batchnorm2d", "batchnorm1d"):
        norm = L.BatchNorm2d if layer.kind == "batchnorm2d" else L.BatchNorm1d
        return norm(a["features"], dtype=dtype)
    if layer.kind == "dropout":
        return L.Dropout(a["rate"], rng=rng)
    simple = {"relu": L.ReLU, "flatten": L.Flatten, "globalavgpool": L.GlobalAvgPool2d}
    return simple[layer.kind]()


def build_network(
    spec: str,
    num_classes: int,
    in_chans: int,
    input_size: tuple[int, int],
    dtype=np.float64,
    rng: np.random.Generator | None = None,
) -> SequentialNet:
    """Build the network a spec string describes (see `convnet.spec`); raises `SpecError` on a bad spec.

    Args:
        rng: draws the Glorot-uniform initial weights and the dropout masks; seed it to repeat a run.
    """
    rng = rng or np.random.default_rng()
    p = plan(spec, num_classes, in_chans, input_size)
    return SequentialNet([layer_from_plan(layer, dtype, rng) for layer in p.layers], p.head_start, num_classes,
                         in_chans)


def _spec_of(info: dict, path: Path) -> str:
    """The spec string of a file's model; the same arguments as the torch builders, no others."""
    takes = {"tutorial": (), "spec": ("arch",)}  # models.sequential's tutorial() and spec()
    model, args = info["model"], info["model_args"]
    if model not in takes:
        raise CheckpointError(
            f"{path} holds a '{model}' model, which the NumPy engine cannot build; "
            "it runs only 'tutorial' and 'spec' models."
        )
    unknown = sorted(set(args) - set(takes[model]))
    if unknown:
        raise CheckpointError(
            f"{path} gives the '{model}' model arguments it does not take ({', '.join(unknown)}); "
            "pass the file `convnet train` wrote."
        )
    arch = args.get("arch", TUTORIAL_SPEC)
    if not isinstance(arch, str):
        raise CheckpointError(
            f"{path} gives the 'spec' model an 'arch' that is not a spec string; pass the file `convnet train` wrote."
        )
    return arch


def _weights_at_least(layer: Layer) -> int:
    """A lower bound of a planned layer's parameter count: its kernel or matrix, without biases."""
    a = layer.args
    if layer.kind == "conv2d":
        return a["out_channels"] * a["in_channels"] * a["kernel"] ** 2
    if layer.kind == "linear":
        return a["out_features"] * a["in_features"]
    return 0


def load_model_file(path: str | Path, dtype=np.float64) -> tuple[SequentialNet, dict]:
    """Read a convnet model file (format in `inference.model_file`) into a scratch network, in eval mode.

    Args:
        path: a model.safetensors file, or the run folder holding one.
        dtype: the dtype the network computes in (the file stores float32).
    Returns:
        (net, info): info is the file's "convnet" metadata as a dict (model, model_args, classes,
        in_chans, input_size, mean, std, data_source, metrics).
    Raises:
        CheckpointError: when the file is missing, unreadable, not a convnet model, fails the
            checks of `formats.read_model_arrays`, is a model this engine cannot build, or its
            tensors do not fit the network its metadata describes.
    """
    state, info, path = read_model_arrays(path, "np")
    classes, chans, size = len(info["classes"]), info["in_chans"], tuple(info["input_size"])
    spec = _spec_of(info, path)
    try:
        layers = plan(spec, classes, chans, size).layers
    except SpecError as e:
        raise CheckpointError(
            f"{path} describes a network that cannot be built ({str(e).rstrip('.')}); "
            "pass the file `convnet train` wrote."
        ) from None
    # Checked before building, so that a hostile spec ("c100000-c100000") cannot make us allocate its
    # weights: more float32 weights than the largest model file holds can never match the file.
    needed = sum(_weights_at_least(layer) for layer in layers)
    if needed > MAX_MODEL_BYTES // 4:
        raise CheckpointError(
            f"{path} describes a '{info['model']}' network of at least {needed:,} weights, "
            "more than any model file holds; "
            "pass the file `convnet train` wrote."
        )
    net = build_network(spec, classes, chans, size, dtype)
    expected = {name: value.shape for name, value in net.state_dict().items()}
    check_weights_match(path, expected, state, info["model"], classes, chans)
    net.load_state_dict(state)
    return net.eval(), info


def normalize(images: np.ndarray, mean, std, dtype=np.float32) -> np.ndarray:
    """uint8 (N, C, H, W) -> model input (x / 255 - mean) / std per channel, as `checkpoint.normalize`."""
    m = np.asarray(mean, dtype=dtype).reshape(1, -1, 1, 1)
    s = np.asarray(std, dtype=dtype).reshape(1, -1, 1, 1)
    return (images.astype(dtype) / 255.0 - m) / s


def predict_logits(net: SequentialNet, info: dict, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """uint8 images (N, C, H, W) at the model's size -> logits (N, num_classes), in batches.

    Raises:
        DataError: when the images are not uint8 of the model's channels and size.
    """
    expected = (info["in_chans"], *info["input_size"])
    if images.dtype != np.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != expected:
        raise DataError(
            f"Images must be uint8 (N, {', '.join(map(str, expected))}) for this model, "
            f"got {images.dtype} {images.shape}; convert them with data.images.load_image."
        )
    net.eval()
    batches = [net.forward(normalize(images[i : i + batch_size], info["mean"], info["std"], net.dtype))
               for i in range(0, len(images), batch_size)]
    return np.concatenate(batches) if batches else np.empty((0, len(info["classes"])), net.dtype)


def predict(net: SequentialNet, info: dict, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Class probabilities (N, num_classes) for uint8 images (N, C, H, W)."""
    return softmax(predict_logits(net, info, images, batch_size))
