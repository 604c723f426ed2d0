"""Networks built from a spec plan, and convnet model files read without torch.

`models.spec.plan` is the one description both engines build from: layer i of the plan is
`layers.i` here and in the torch `SequentialNet`, so a model file written by `convnet train`
loads into this engine name for name, and the two give the same logits.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from convnet.errors import CheckpointError, DataError
from convnet.formats import read_model_arrays
from convnet.models.spec import TUTORIAL_SPEC, Layer, plan
from convnet.scratch import layers as L
from convnet.scratch.losses import softmax


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
        return L.Conv2d(a["in_channels"], a["out_channels"], a["kernel"], a["stride"], a["padding"], dtype=dtype, rng=rng)
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
    """Build the network a spec string describes (see `models.spec`); raises `SpecError` on a bad spec.

    Args:
        rng: draws the Glorot-uniform initial weights and the dropout masks; seed it to repeat a run.
    """
    rng = rng or np.random.default_rng()
    p = plan(spec, num_classes, in_chans, input_size)
    return SequentialNet([layer_from_plan(layer, dtype, rng) for layer in p.layers], p.head_start, num_classes, in_chans)


def _spec_of(info: dict, path: Path) -> str:
    if info["model"] == "tutorial":
        return TUTORIAL_SPEC
    if info["model"] == "spec":
        return info["model_args"].get("arch", TUTORIAL_SPEC)
    raise CheckpointError(
        f"{path} holds a '{info['model']}' model, which the NumPy engine cannot build; it runs only 'tutorial' and 'spec' models."
    )


def load_model_file(path: str | Path, dtype=np.float64) -> tuple[SequentialNet, dict]:
    """Read a convnet model file (format in `engine.checkpoint`) into a scratch network, in eval mode.

    Args:
        path: a model.safetensors file, or the run folder holding one.
        dtype: the dtype the network computes in (the file stores float32).
    Returns:
        (net, info): info is the file's "convnet" metadata as a dict (model, model_args, classes,
        in_chans, input_size, mean, std, data_source, metrics).
    Raises:
        CheckpointError: when the file is missing, unreadable, not a convnet model, or a model
            this engine cannot build.
    """
    state, info, path = read_model_arrays(path, "np")
    net = build_network(_spec_of(info, path), len(info["classes"]), info["in_chans"], tuple(info["input_size"]), dtype)
    try:
        net.load_state_dict(state)
    except ValueError as e:
        raise CheckpointError(f"{path} does not match the network its metadata describes ({e}); pass the file `convnet train` wrote.") from None
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
        raise DataError(f"Images must be uint8 (N, {', '.join(map(str, expected))}) for this model, got {images.dtype} {images.shape}; convert them with data.images.load_image.")
    net.eval()
    batches = [net.forward(normalize(images[i : i + batch_size], info["mean"], info["std"], net.dtype)) for i in range(0, len(images), batch_size)]
    return np.concatenate(batches) if batches else np.empty((0, len(info["classes"])), net.dtype)


def predict(net: SequentialNet, info: dict, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Class probabilities (N, num_classes) for uint8 images (N, C, H, W)."""
    return softmax(predict_logits(net, info, images, batch_size))
