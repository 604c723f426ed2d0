"""A Keras-style summary: every layer with its output shape and parameter count."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass(frozen=True)
class LayerRow:
    name: str  # e.g. "layers.0 (Conv2d)"
    output_shape: tuple[int, ...]  # without the batch dimension
    params: int
    kind: str = ""  # the module's class name, e.g. "Conv2d"


def summarize(model: nn.Module, input_shape: tuple[int, int, int]) -> list[LayerRow]:
    """Run one image of `input_shape` (C, H, W) through the model and record each leaf layer."""
    rows: list[LayerRow] = []
    hooks = []
    for name, module in model.named_modules():
        if len(list(module.children())) == 0:

            def record(mod, inputs, output, name=name):
                params = sum(p.numel() for p in mod.parameters(recurse=False))
                kind = type(mod).__name__
                rows.append(LayerRow(f"{name} ({kind})", tuple(output.shape[1:]), params, kind))

            hooks.append(module.register_forward_hook(record))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return rows


def _shape(shape: tuple[int, ...]) -> str:
    return " x ".join(map(str, shape))


def pool_before_relu_note(rows: list[LayerRow]) -> str | None:
    """A footnote for a table where a max pool runs before its ReLU (the sequential models' order,
    models.sequential._run), which `convnet explain` teaches the other way round; None if none does."""
    for before, pool, relu in zip(rows, rows[1:], rows[2:], strict=False):  # every three rows in a row
        if pool.kind == "MaxPool2d" and relu.kind == "ReLU":
            return ("* MaxPool runs before ReLU here (`convnet explain` shows conv, ReLU, pool): the same result,\n"
                    "  as max(relu(x)) == relu(max(x)), and the ReLU then has fewer values to do\n"
                    f"  ({_shape(pool.output_shape)} instead of {_shape(before.output_shape)}).")
    return None


def format_summary(model: nn.Module, input_shape: tuple[int, int, int], title: str = "") -> str:
    rows = summarize(model, input_shape)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    name_w = max(25, *(len(r.name) for r in rows)) + 2
    shape_w = 22
    rule = "=" * (name_w + shape_w + 12)
    lines = [f'Model: "{title}"'] if title else []
    lines += [rule, f"{'Layer (type)':<{name_w}}{'Output Shape':<{shape_w}}{'Param #':>12}", rule]
    lines += [f"{r.name:<{name_w}}{str((None, *r.output_shape)):<{shape_w}}{r.params:>12,}" for r in rows]
    lines += [rule, f"Total params: {total:,}", f"Trainable params: {trainable:,}",
              f"Non-trainable params: {total - trainable:,}", f"Input shape: {input_shape}"]
    note = pool_before_relu_note(rows)
    return "\n".join(lines if note is None else [*lines, note])
