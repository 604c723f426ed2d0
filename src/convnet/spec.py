"""Sequential CNNs written as a short spec string: parsing and shape planning, without torch.

The tutorial urges readers to "adjust the arrangement of the convolutional and max-pooling
layers"; a spec string is that arrangement written down. Layers are separated by '-':

    c<F>[k<K>][s<S>][p<P>]  convolution with F filters, kernel K (3), stride S (1),
                            zero padding P (0, 'valid' as in Keras), then ReLU
    p[<K>][s<S>]            max pooling, kernel K (2), stride S (= K)
    a[<K>][s<S>]            average pooling, kernel K (2), stride S (= K)
    g                       global average pooling (the image becomes 1x1)
    b                       batch normalization (before the ReLU of the layer it follows)
    drop<R>                 dropout with rate R, e.g. drop0.25
    f                       flatten (added by itself before the first dense layer)
    d<N>                    dense layer with N units, then ReLU

The output layer (one unit per class, no activation: the loss takes logits) is appended.
The tutorial network is "c32-p-c64-p-c64-f-d64": 122,570 parameters on 32x32x3 and 10 classes.

`plan()` turns a spec into a flat list of concrete layers with their shapes. Both the torch
builder (`models.sequential`) and the NumPy reference engine (`scratch`) build from that one
list, so layer i has the same meaning, and the same weight names, in both.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from convnet.errors import SpecError

TUTORIAL_SPEC = "c32-p-c64-p-c64-f-d64"


@dataclass(frozen=True)
class LayerSpec:
    """One token of a spec string."""

    kind: str  # conv | maxpool | avgpool | gpool | bn | drop | flatten | dense
    token: str  # as written, for error messages
    size: int = 0  # filters or units
    kernel: int = 0
    stride: int = 0
    padding: int = 0
    rate: float = 0.0


@dataclass(frozen=True)
class Layer:
    """One concrete layer of a planned network.

    kind is one of: conv2d, relu, maxpool2d, avgpool2d, globalavgpool, batchnorm2d,
    batchnorm1d, dropout, flatten, linear. `args` holds what the layer needs
    (in_channels/out_channels/kernel/stride/padding, features, in_features/out_features, rate).
    """

    kind: str
    args: dict = field(default_factory=dict)
    out_shape: tuple[int, ...] = ()  # per image: (C, H, W) or (F,)


@dataclass(frozen=True)
class Plan:
    layers: list[Layer]
    head_start: int  # index of the flatten: layers before it are the features


_PATTERNS = [
    (re.compile(r"c(\d+)(?:k(\d+))?(?:s(\d+))?(?:p(\d+))?"), "conv"),
    (re.compile(r"p(\d+)?(?:s(\d+))?"), "maxpool"),
    (re.compile(r"a(\d+)?(?:s(\d+))?"), "avgpool"),
    (re.compile(r"drop(0?\.\d+|0)"), "drop"),
    (re.compile(r"d(\d+)"), "dense"),
    (re.compile(r"g"), "gpool"),
    (re.compile(r"b"), "bn"),
    (re.compile(r"f"), "flatten"),
]


def _parse_token(token: str, position: int) -> LayerSpec:
    for pattern, kind in _PATTERNS:
        m = pattern.fullmatch(token)
        if not m:
            continue
        g = m.groups()
        if kind == "conv":
            spec = LayerSpec(kind, token, size=int(g[0]), kernel=int(g[1] or 3), stride=int(g[2] or 1),
                             padding=int(g[3] or 0))
        elif kind in ("maxpool", "avgpool"):
            k = int(g[0] or 2)
            spec = LayerSpec(kind, token, kernel=k, stride=int(g[1] or k))
        elif kind == "drop":
            spec = LayerSpec(kind, token, rate=float(g[0]))
        elif kind == "dense":
            spec = LayerSpec(kind, token, size=int(g[0]))
        else:
            spec = LayerSpec(kind, token)
        if (kind in ("conv", "dense") and spec.size < 1
                or kind in ("conv", "maxpool", "avgpool") and min(spec.kernel, spec.stride) < 1):
            raise SpecError(f"Layer {position} '{token}' has a zero size, kernel or stride; use positive numbers.")
        return spec
    raise SpecError(
        f"Layer {position} '{token}' is not a layer this spec knows; use c<filters>[k<kernel>][s<stride>][p<pad>], "
        "p, a, g, b, drop<rate>, f or d<units> (e.g. c32-p-c64-p-c64-f-d64)."
    )


def parse_spec(spec: str) -> list[LayerSpec]:
    tokens = [t.strip() for t in spec.strip().split("-")]
    if not spec.strip() or any(t == "" for t in tokens):
        raise SpecError(f"The spec {spec!r} has an empty layer; separate layers with single '-', e.g. c32-p-c64-f-d64.")
    return [_parse_token(t.lower(), i + 1) for i, t in enumerate(tokens)]


def conv_out_size(n: int, kernel: int, stride: int, padding: int) -> int:
    """The tutorial's formula: (n + 2p - k) / s + 1, rounded down."""
    return (n + 2 * padding - kernel) // stride + 1


def plan(spec: str, num_classes: int, in_chans: int, input_size: tuple[int, int]) -> Plan:
    """Turn a spec into concrete layers, checking every shape on the way.

    Raises:
        SpecError: naming the offending layer when the spec does not parse, shrinks the image
            below 1x1, or puts a convolution or pooling after the flatten.
    """
    layers: list[Layer] = []
    c, (h, w) = in_chans, tuple(input_size)
    flat: int | None = None  # features per image once flattened
    head_start: int | None = None
    relu_at: int | None = None  # where a following 'b' goes: just before that ReLU

    def flatten() -> None:
        nonlocal flat, head_start
        head_start, flat = len(layers), c * h * w
        layers.append(Layer("flatten", {}, (flat,)))

    for i, ls in enumerate(parse_spec(spec), start=1):
        where = f"Layer {i} '{ls.token}'"
        if ls.kind in ("conv", "maxpool", "avgpool", "gpool") and flat is not None:
            raise SpecError(
                f"{where} works on images but comes after the flatten; move it before 'f' and the dense layers."
            )
        if ls.kind in ("conv", "maxpool", "avgpool"):
            pad = ls.padding if ls.kind == "conv" else 0
            h2, w2 = conv_out_size(h, ls.kernel, ls.stride, pad), conv_out_size(w, ls.kernel, ls.stride, pad)
            if h2 < 1 or w2 < 1:
                raise SpecError(
                    f"{where} shrinks the {h}x{w} image below 1x1; remove a layer, add padding or use a larger input."
                )
            if ls.kind == "conv":
                args = dict(in_channels=c, out_channels=ls.size, kernel=ls.kernel, stride=ls.stride, padding=ls.padding)
                c, h, w = ls.size, h2, w2
                layers += [Layer("conv2d", args, (c, h, w)), Layer("relu", {}, (c, h, w))]
                relu_at = len(layers) - 1
            else:
                h, w = h2, w2
                layers.append(Layer(ls.kind + "2d", dict(kernel=ls.kernel, stride=ls.stride), (c, h, w)))
        elif ls.kind == "gpool":
            h = w = 1
            layers.append(Layer("globalavgpool", {}, (c, 1, 1)))
        elif ls.kind == "bn":
            if relu_at is None:
                raise SpecError(f"{where} must follow a convolution or dense layer.")
            shape = layers[relu_at].out_shape
            kind = "batchnorm2d" if len(shape) == 3 else "batchnorm1d"
            layers.insert(relu_at, Layer(kind, dict(features=shape[0]), shape))
            relu_at = None
        elif ls.kind == "drop":
            layers.append(Layer("dropout", dict(rate=ls.rate), layers[-1].out_shape if layers else (c, h, w)))
        elif ls.kind == "flatten":
            if flat is not None:
                raise SpecError(f"{where} flattens twice; keep one 'f'.")
            flatten()
        elif ls.kind == "dense":
            if flat is None:
                flatten()
            layers += [Layer("linear", dict(in_features=flat, out_features=ls.size), (ls.size,)),
                       Layer("relu", {}, (ls.size,))]
            relu_at = len(layers) - 1
            flat = ls.size
    if flat is None:
        flatten()
    layers.append(Layer("linear", dict(in_features=flat, out_features=num_classes), (num_classes,)))
    return Plan(layers, head_start)  # type: ignore[arg-type]
