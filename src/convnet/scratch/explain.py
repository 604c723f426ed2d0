"""The tutorial's worked example, computed by the NumPy layers and written out number by number.

A 4x4 RGB image, one 2x2 filter per colour channel, a convolution (stride 1, no padding) to a
3x3 map, ReLU, 2x2 max and average pooling with stride 1 to 2x2, flatten, a dense layer with
two outputs ("dog", "not dog") and softmax. `worked_example` computes every number with the
scratch layers (the same code that trains networks), `render_text` spells out the arithmetic.
`parameter_arithmetic` adds the tutorial's argument for convolutions: how few weights a
filter needs next to a fully connected neuron, and the tutorial network's 122,570
parameters layer by layer, counted from the layers the plan builds.
"""
from __future__ import annotations

import numpy as np

from convnet.errors import SettingError, SpecError
from convnet.scratch import layers as L
from convnet.scratch.losses import softmax
from convnet.scratch.network import layer_from_plan
from convnet.spec import TUTORIAL_SPEC, conv_out_size, plan

IMAGE_SIZE = 4  # the tutorial's 4x4 example image


def _check_sizes(n: int, kernel: int, stride: int, padding: int, pool: int, pool_stride: int) -> None:
    """Raise `SettingError` for a setting out of range or one that leaves an empty map; `$name` is a
    setting, named by each front end its own way (the CLI's --pool-stride, the server's pool_stride)."""
    least = {"kernel": (kernel, 1), "stride": (stride, 1), "padding": (padding, 0), "pool": (pool, 1),
             "pool_stride": (pool_stride, 1)}
    for name, (value, bound) in least.items():
        if value < bound:
            raise SettingError(f"${name} is {value} but must be at least {bound}; pass a larger number.")
    m = conv_out_size(n, kernel, stride, padding)
    if m < 1:
        raise SettingError(
            f"A {kernel}x{kernel} filter does not fit the {n}x{n} image with padding {padding}, so the convolution "
            "output would be empty; use a smaller $kernel or more $padding."
        )
    if conv_out_size(m, pool, pool_stride, 0) < 1:
        raise SettingError(
            f"A {pool}x{pool} pooling window does not fit the {m}x{m} convolution output, so the pooled map would be "
            "empty; use a smaller $pool or $kernel."
        )


def _size_formula(n: int, k: int, p: int, s: int) -> dict:
    return {"n": n, "k": k, "p": p, "s": s, "out": conv_out_size(n, k, s, p)}


def _channel_names(c: int) -> list[str]:
    return ["R", "G", "B"] if c == 3 else ["gray"] if c == 1 else [f"ch{i}" for i in range(c)]


def _example_image(image: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """`image` as an array, refused unless (C, n, n); by default a random 3x4x4 image of 0..9 from `rng`."""
    image = rng.integers(0, 10, (3, IMAGE_SIZE, IMAGE_SIZE)) if image is None else np.asarray(image)
    if image.ndim != 3 or image.shape[1] != image.shape[2]:
        raise SpecError(
            f"The example image must be square, (channels, n, n), got shape {image.shape}; pass a (3, 4, 4) array."
        )
    return image


def _set_filter(conv: L.Conv2d, filters: np.ndarray | None, bias: int | None, rng: np.random.Generator) -> None:
    """Give `conv`'s one filter `filters` and `bias`, or random integers -1..1 from `rng` where None."""
    shape = conv.weight.data.shape  # (1, C, k, k)
    # Drawn even when given, so the dense weights drawn after them stay the seed's.
    random_filters, random_bias = rng.integers(-1, 2, shape), rng.integers(-1, 2, 1)
    conv.weight.data = (random_filters if filters is None else np.reshape(filters, shape)).astype(np.float64)
    conv.bias.data = (random_bias if bias is None else np.array([bias])).astype(np.float64)


def worked_example(
    image: np.ndarray | None = None,
    seed: int = 0,
    kernel: int = 2,
    stride: int = 1,
    padding: int = 0,
    pool: int = 2,
    pool_stride: int = 1,
    outputs: tuple[str, ...] = ("dog", "not dog"),
    filters: np.ndarray | None = None,
    bias: int | None = None,
) -> dict:
    """Run the worked example through the scratch layers.

    Args:
        image: (C, n, n) integer pixel values; by default a seeded random 3x4x4 image of 0..9.
        seed: draws the image, the filters (-1..1), the bias and the dense weights and biases (two decimals).
        filters: (C, kernel, kernel) filter values to use instead of random ones.
        bias: the convolution's bias instead of a random one.
    Returns:
        A JSON-ready dict; arrays are nested lists in (C, H, W) order: image, filters (C, k, k,
        the one filter's slice per channel), bias, conv (1, Ho, Wo, before ReLU), relu,
        max_pool, avg_pool (both pooled from relu), flat, dense_weights (outputs x inputs),
        dense_bias, logits, probabilities, plus the settings, output_names, channel_names,
        output_size (the (n + 2p - k) / s + 1 values for the convolution and the pooling) and
        parameters (`parameter_arithmetic()`).
    Raises:
        SettingError (a SpecError): when a setting is out of range or leaves the convolution or pooling empty.
    """
    # Separate streams, so that passing an image keeps the filters the seed gives.
    image_rng, weight_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    image = _example_image(image, image_rng)
    c, n = image.shape[0], image.shape[1]
    _check_sizes(n, kernel, stride, padding, pool, pool_stride)

    conv = L.Conv2d(c, 1, kernel, stride, padding)
    _set_filter(conv, filters, bias, weight_rng)
    x = image[None].astype(np.float64)  # (1, C, n, n): a batch of one
    conv_map = conv.forward(x)
    relu = L.ReLU().forward(conv_map)
    max_pool = L.MaxPool2d(pool, pool_stride).forward(relu)
    avg_pool = L.AvgPool2d(pool, pool_stride).forward(relu)
    flat = L.Flatten().forward(max_pool)
    dense = L.Linear(flat.shape[1], len(outputs))
    # Two-decimal weights keep the logits within a few units, so softmax gives readable odds.
    dense.weight.data = weight_rng.integers(-9, 10, dense.weight.shape) / 100
    dense.bias.data = weight_rng.integers(-9, 10, len(outputs)) / 100
    logits = dense.forward(flat)
    return {
        "image": image.astype(int).tolist(),
        "channel_names": _channel_names(c),
        "filters": conv.weight.data[0].astype(int).tolist(),
        "bias": int(conv.bias.data[0]),
        "kernel": kernel, "stride": stride, "padding": padding,
        "conv": conv_map[0].tolist(),
        "relu": relu[0].tolist(),
        "pool_kernel": pool, "pool_stride": pool_stride,
        "max_pool": max_pool[0].tolist(),
        "avg_pool": avg_pool[0].tolist(),
        "flat": flat[0].tolist(),
        "dense_weights": dense.weight.data.tolist(),
        "dense_bias": dense.bias.data.tolist(),
        "logits": logits[0].tolist(),
        "probabilities": softmax(logits)[0].tolist(),
        "output_names": list(outputs),
        "output_size": {"conv": _size_formula(n, kernel, padding, stride),
                        "pool": _size_formula(conv_map.shape[2], pool, 0, pool_stride)},
        "parameters": parameter_arithmetic(),
    }


def parameter_arithmetic(image_side: int = 200, channels: int = 3, kernel: int = 3) -> dict:
    """The tutorial's weight counts: one fully connected neuron, one filter, the tutorial network.

    Returns:
        {"dense_neuron": {side, channels, weights}, "filter": {kernel, channels, weights, bias},
        "network": {spec, input, classes, layers: [{name, kind, out_shape, shapes, count}], total}}
    """
    classes, size = 10, (32, 32)
    p = plan(TUTORIAL_SPEC, classes, channels, size)
    rows = []
    for i, layer in enumerate(p.layers):
        shapes = [list(q.shape) for q in layer_from_plan(layer, np.float64, np.random.default_rng(0)).parameters()]
        rows.append({"name": f"layers.{i}", "kind": layer.kind, "out_shape": list(layer.out_shape), "shapes": shapes,
                     "count": sum(int(np.prod(s)) for s in shapes)})
    return {
        "dense_neuron": {"side": image_side, "channels": channels, "weights": image_side * image_side * channels},
        "filter": {"kernel": kernel, "channels": channels, "weights": kernel * kernel * channels, "bias": 1},
        "network": {"spec": TUTORIAL_SPEC, "input": [channels, *size], "classes": classes, "layers": rows,
                    "total": sum(r["count"] for r in rows)},
    }


# ---- text -------------------------------------------------------------------------------


def _num(v: float) -> str:
    """A number as a reader would write it: 7, -2, 3.75, 0.333."""
    r = round(float(v), 4)
    return str(int(r)) if r == int(r) else f"{r:g}"


def _factor(v: float) -> str:
    """A number inside a product: negatives in parentheses, 3*(-1)."""
    s = _num(v)
    return f"({s})" if s.startswith("-") else s


def _grids(arrays: list[np.ndarray], titles: list[str], indent: str = "   ") -> list[str]:
    """2-D arrays side by side, each under its title, numbers right-aligned."""
    width = max(len(_num(v)) for a in arrays for v in a.flat)
    blocks = [[" ".join(_num(v).rjust(width) for v in row) for row in a] for a in arrays]
    block_w = [max(len(t), len(b[0])) for t, b in zip(titles, blocks, strict=True)]
    lines = [indent + "    ".join(t.ljust(w) for t, w in zip(titles, block_w, strict=True)).rstrip()]
    for r in range(max(len(b) for b in blocks)):
        lines.append(indent + "    ".join((b[r] if r < len(b) else "").ljust(w)
                                          for b, w in zip(blocks, block_w, strict=True)).rstrip())
    return lines


def _formula(f: dict) -> str:
    n, k, p, s, out = f["n"], f["k"], f["p"], f["s"], f["out"]
    exact = (n + 2 * p - k) % s == 0
    note = "" if exact else "  (rounded down: a window that would run past the edge is dropped)"
    return f"(n + 2p - k) / s + 1 = ({n} + 2*{p} - {k}) / {s} + 1 = {out}{note}"


def _conv_lines(r: dict) -> list[str]:
    image = np.pad(np.array(r["image"]), ((0, 0), (r["padding"],) * 2, (r["padding"],) * 2))
    filters, k, s = np.array(r["filters"]), r["kernel"], r["stride"]
    lines = []
    for (i, j), value in np.ndenumerate(np.array(r["conv"])[0]):
        window = image[:, i * s : i * s + k, j * s : j * s + k]
        per_channel = [
            "(" + " + ".join(f"{_factor(a)}*{_factor(b)}"
                             for a, b in zip(window[ch].flat, filters[ch].flat, strict=True)) + f") [{name}]"
            for ch, name in enumerate(r["channel_names"])
        ]
        lines.append(f"   out[{i},{j}] = " + " + ".join(per_channel)
                     + f" + {_factor(r['bias'])} [bias] = {_num(value)}")
    return lines


def _pool_lines(r: dict) -> list[str]:
    relu, k, s = np.array(r["relu"])[0], r["pool_kernel"], r["pool_stride"]
    lines = []
    for (i, j), top in np.ndenumerate(np.array(r["max_pool"])[0]):
        window = [_num(v) for v in relu[i * s : i * s + k, j * s : j * s + k].flat]
        mean = np.array(r["avg_pool"])[0][i, j]
        lines.append(f"   max[{i},{j}] = max({', '.join(window)}) = {_num(top)}")
        lines.append(f"   avg[{i},{j}] = ({' + '.join(window)}) / {k * k} = {_num(mean)}")
    return lines


def _dense_lines(r: dict) -> list[str]:
    lines = []
    for name, w, b, z in zip(r["output_names"], r["dense_weights"], r["dense_bias"], r["logits"], strict=True):
        terms = " + ".join(f"{_factor(x)}*{_factor(wi)}" for x, wi in zip(r["flat"], w, strict=True))
        lines.append(f"   {name} = {terms} + {_factor(b)} = {_num(z)}")
    return lines


def _softmax_lines(r: dict) -> list[str]:
    total = " + ".join(f"exp({_num(z)})" for z in r["logits"])
    return [f"   P({name}) = exp({_num(z)}) / ({total}) = {p:.4f}"
            for name, z, p in zip(r["output_names"], r["logits"], r["probabilities"], strict=True)]


def render_text(r: dict) -> str:
    """Step-by-step text of a `worked_example` result, every number printed."""
    c, n, k = len(r["image"]), len(r["image"][0]), r["kernel"]
    names = r["channel_names"]
    out = [
        "The tutorial's worked example, every number computed by the NumPy engine (convnet.scratch).",
        "",
        f"1. The image: {n}x{n} pixels, {c} channel{'s' if c > 1 else ''} ({', '.join(names)}).",
        *_grids([np.array(ch) for ch in r["image"]], names),
    ]
    if r["padding"]:
        padded = np.pad(np.array(r["image"]), ((0, 0), (r["padding"],) * 2, (r["padding"],) * 2))
        out += [f"   Padding {r['padding']} frames each channel with zeros:", *_grids(list(padded), names)]
    out += [
        "",
        f"2. The filter: {k}x{k} weights per channel ({k}x{k}x{c} in all), bias b = {r['bias']}, "
        f"stride {r['stride']}, padding {r['padding']}.",
        *_grids([np.array(f) for f in r["filters"]], names),
        "",
        "3. Convolution: slide the filter over the image; each output is the sum over channels of",
        "   the window-times-filter products, plus the bias.",
        f"   Output size: {_formula(r['output_size']['conv'])}, "
        f"so the map is {r['output_size']['conv']['out']}x{r['output_size']['conv']['out']}.",
        *_conv_lines(r),
        *_grids([np.array(r["conv"])[0]], ["Feature map (before ReLU)"]),
        "",
        "4. ReLU: max(0, x) turns every negative value into 0.",
        *_grids([np.array(r["relu"])[0]], ["After ReLU"]),
        "",
        f"5. Pooling: a {r['pool_kernel']}x{r['pool_kernel']} window, stride {r['pool_stride']}, over the ReLU map.",
        f"   Output size: {_formula(r['output_size']['pool'])}.",
        *_pool_lines(r),
        *_grids([np.array(r["max_pool"])[0], np.array(r["avg_pool"])[0]], ["Max pooling", "Average pooling"]),
        "",
        f"6. Flatten: the max-pooled map becomes a vector of {len(r['flat'])} "
        f"number{'s' if len(r['flat']) > 1 else ''}: [{', '.join(_num(v) for v in r['flat'])}].",
        "",
        f"7. Dense layer: {len(r['output_names'])} outputs, each a weighted sum of the flattened inputs plus a bias "
        "(the logits):",
        *_dense_lines(r),
        "",
        "8. Softmax turns the logits into probabilities that add up to 1: P(i) = exp(z_i) / sum_j exp(z_j).",
        *_softmax_lines(r),
        "",
        render_parameters(r["parameters"]),
    ]
    return "\n".join(out)


def render_parameters(p: dict) -> str:
    """The tutorial's parameter arithmetic as text."""
    d, f, net = p["dense_neuron"], p["filter"], p["network"]
    lines = [
        "9. Why convolutions: count the weights.",
        f"   A {d['side']}x{d['side']}x{d['channels']} image fully connected to ONE neuron: "
        f"{d['side']}*{d['side']}*{d['channels']} = {d['weights']:,} weights.",
        f"   A {f['kernel']}x{f['kernel']}x{f['channels']} filter: "
        f"{f['kernel']}*{f['kernel']}*{f['channels']} = {f['weights']:,} weights "
        f"(+{f['bias']} bias = {f['weights'] + f['bias']:,}), shared by every position of the image.",
        "",
        f"   The tutorial network ({net['spec']}) on {'x'.join(map(str, net['input'][1:]))}x{net['input'][0]} images, "
        f"{net['classes']} classes:",
    ]
    for row in net["layers"]:
        shape = "x".join(map(str, row["out_shape"]))
        arithmetic = " + ".join("x".join(map(str, s)) for s in row["shapes"])
        count = f"{arithmetic} = {row['count']:,}" if row["shapes"] else "0"
        lines.append(f"   {row['name']:<10} {row['kind']:<10} out {shape:<9} parameters {count}")
    lines.append(f"   {'total':<41} {net['total']:,} parameters")
    return "\n".join(lines)
