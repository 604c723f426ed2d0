"""Running a model over many images: no autograd, large batches, optional bf16 and TTA."""
from __future__ import annotations

import contextlib
import functools

import torch
import torch.nn as nn

from convnet.data.normalize import normalize
from convnet.errors import ConfigError
from convnet.inference.allocator import keep_freed_memory
from convnet.inference.tta import tta_logits


def resolve_device(name: str = "auto") -> torch.device:
    """auto picks CUDA, then Apple's MPS, then the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto.")
    return torch.device(name)


@functools.cache
def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        # AVX-512 bf16 (or AMX): mkldnn runs bf16 convolutions natively; elsewhere it would be emulated and slow.
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def autocast_dtype(precision: str, device: torch.device, compiled: bool = False) -> torch.dtype | None:
    """The autocast dtype for a precision setting: None means plain fp32.

    A compiled model (`--compile`) trains in fp32 on every device: under bf16 autocast, torch
    2.13's inductor gave airnet NaN gradients in its first conv group from the first step on the
    CPU, where the eager model's are finite (`--recipe fast --compile` diverged at its second
    step), and on an H200 with torch 2.11 the same recipe diverged in its first epoch
    (benchmarks/results/recipe_sweep_compile.json).

    Nor does a compiled model train on the CPU: there torch 2.13's compiled max-pool backward gave
    NaN gradients or index errors in 7 of 8 small conv + max-pool networks restricted to AVX2, and
    aborted on heap corruption in 1 of 8 with AVX-512 (benchmarks/results/compile_cpu.json), where
    even the working cases trained slower than eager ones (engine_speed_choices.json).

    Raises:
        ConfigError: compiling on the CPU, or bf16 asked for by name together with compiling.
    """
    if compiled:
        if device.type == "cpu":
            raise ConfigError("--compile is not supported on the CPU (torch's compiled max-pool backward gives NaN "
                              "gradients or crashes there, and trains slower than eager); "
                              "drop --compile, or use it on a CUDA GPU.")
        if precision == "bf16":
            raise ConfigError("--compile with --precision bf16 is not supported (torch's compiled bf16 training of "
                              "these models diverges); drop --compile, or use --precision fp32 or auto with it.")
        return None
    if precision == "fp32" or (precision == "auto" and not bf16_supported(device)):
        return None
    return torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[object]:
    """Autocast to `dtype` on `device`, or nothing when `dtype` is None (float32 throughout)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def batched_logits(
    model: nn.Module,
    images: torch.Tensor,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    batch_size: int = 1024,
    amp_dtype: torch.dtype | None = None,
    tta: int = 0,
    channels_last: bool = False,
) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 logits (N, K) on the CPU.

    Images move to the model's device one batch at a time, so a large split never has to fit there.
    Each batch's activations reuse the last one's memory (inference.allocator): evaluating airnet on
    the CPU at batch 1000 takes about half the time it does with glibc's default
    (benchmarks/results/inference_speed.json).
    """
    keep_freed_memory()
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(images), batch_size):
        x = normalize(images[i : i + batch_size].to(device, non_blocking=True), mean, std)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp_dtype):
            out.append(tta_logits(lambda v: model(v).float(), x, tta).cpu())
    model.train(was_training)
    if not out:
        raise ValueError("no images to evaluate")
    return torch.cat(out)
