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


def summarize(model: nn.Module, input_shape: tuple[int, int, int]) -> list[LayerRow]:
    """Run one image of `input_shape` (C, H, W) through the model and record each leaf layer."""
    rows: list[LayerRow] = []
    hooks = []
    for name, module in model.named_modules():
        if len(list(module.children())) == 0:

            def record(mod, inputs, output, name=name):
                params = sum(p.numel() for p in mod.parameters(recurse=False))
                rows.append(LayerRow(f"{name} ({type(mod).__name__})", tuple(output.shape[1:]), params))

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
    lines += [rule, f"Total params: {total:,}", f"Trainable params: {trainable:,}", f"Non-trainable params: {total - trainable:,}", f"Input shape: {input_shape}"]
    return "\n".join(lines)
