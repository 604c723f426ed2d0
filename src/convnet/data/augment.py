"""Training augmentation as pure functions of a whole batch (N, C, H, W), uint8 or float.

Every random draw comes from an explicit `torch.Generator`, so a run repeats exactly; draws
are made on the generator's device and moved to the batch's. No function loops over images.

    flip        "random": each image mirrored left-right with probability 1/2.
                "alternating" (airbench): a seeded hash of the dataset index picks half of
                the images; they are mirrored in even epochs and the other half in odd epochs,
                so over two epochs every image is seen both ways.
    translate   shift by up to `translate` pixels each way, filling with the reflected image:
                a random crop of the image reflect-padded by `translate`.
    cutout      zero a size x size square at a random centre, clipped at the borders (zero is
                black on uint8, the dataset mean on normalized input).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from convnet.checks import is_int
from convnet.errors import ConfigError

FLIP_MODES = ("none", "random", "alternating")
MAX_PIXELS_OR_SEED = 2**31 - 1  # bound of translate, cutout (pixels) and flip_seed


@dataclass(frozen=True)
class AugmentConfig:
    flip: str = "none"  # one of FLIP_MODES
    translate: int = 0  # largest shift in pixels, each axis; 0 = off (airbench: 2)
    cutout: int = 0  # side of the zeroed square in pixels; 0 = off
    flip_seed: int = 0  # picks which half the alternating flip mirrors in even epochs

    def __post_init__(self) -> None:
        if not isinstance(self.flip, str) or self.flip not in FLIP_MODES:
            raise ConfigError(f"Unknown flip mode {self.flip!r}; use one of {', '.join(FLIP_MODES)}.")
        for name in ("translate", "cutout", "flip_seed"):
            value = getattr(self, name)
            if not is_int(value) or not 0 <= value <= MAX_PIXELS_OR_SEED:
                raise ConfigError(
                    f"--{name.replace('_', '-')} must be a whole number from 0 to {MAX_PIXELS_OR_SEED}, got {value!r}."
                )


def _rand(n: int, gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=gen.device).to(like.device)


def _randint(low: int, high: int, n: int, gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """n integers in [low, high), on the device of `like`."""
    return torch.randint(low, high, (n,), generator=gen, device=gen.device).to(like.device)


def apply_flip(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mirror left-right the images where `mask` (N,) bool is true."""
    return torch.where(mask.view(-1, 1, 1, 1), x.flip(-1), x)


def batch_flip_lr(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    return apply_flip(x, _rand(len(x), gen, x) < 0.5)


_PRIME = 2**31 - 1  # hashing modulo this keeps every product of two values inside int64


def _mix(x: torch.Tensor) -> torch.Tensor:
    """Scramble int64 values in [0, _PRIME): modular multiplications interleaved with xor-shifts."""
    for multiplier in (48271, 69621, 16807):
        x = (x * multiplier) % _PRIME
        x = x ^ (x >> 16)
    return x


def flip_mask(indices: torch.Tensor, seed: int) -> torch.Tensor:
    """The alternating flip's fixed choice for dataset images `indices`: bool, true for about half.

    A hash of (index, seed), so the same image gets the same answer in every epoch and batch
    without storing a mask; `flip_mask(torch.arange(n), seed)` is the whole dataset's.
    """
    offset = _mix(torch.tensor(seed % _PRIME, dtype=torch.int64, device=indices.device))
    return ((_mix((indices.to(torch.int64) + offset) % _PRIME) >> 15) & 1).bool()


def alternating_flip(x: torch.Tensor, epoch: int, indices: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Mirror the images whose `flip_mask` is true in even epochs, and the others in odd epochs.

    Args:
        indices: (N,) dataset index of each image of the batch.
    """
    mask = flip_mask(indices, seed).to(x.device)
    return apply_flip(x, mask if epoch % 2 == 0 else ~mask)


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Map positions up to size - 1 outside [0, size) back inside by mirroring at the edge pixels."""
    index = index.abs()
    return torch.where(index > size - 1, 2 * (size - 1) - index, index)


def reflect_shift(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Shift each image with reflection at the borders:
    out[n, :, i, j] = x[n, :, reflect(i + dy[n]), reflect(j + dx[n])].

    That is the crop at (p + dy, p + dx) of the image reflect-padded by p (as `F.pad(..., "reflect")`).
    Shifts must be smaller than the image side.
    """
    n, c, h, w = x.shape
    rows = _reflect(torch.arange(h, device=x.device) + dy.view(-1, 1), h)  # (N, H)
    cols = _reflect(torch.arange(w, device=x.device) + dx.view(-1, 1), w)  # (N, W)
    x = x.gather(2, rows.view(n, 1, h, 1).expand(n, c, h, w))
    return x.gather(3, cols.view(n, 1, 1, w).expand(n, c, h, w))


def batch_translate(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by dy, dx drawn uniformly from [-pad, pad], filling with its reflection."""
    if pad >= min(x.shape[-2:]):
        raise ConfigError(
            f"A translation of {pad} pixels needs images larger than {pad}x{pad}; use a smaller translate."
        )
    dy = _randint(-pad, pad + 1, len(x), gen, x)
    dx = _randint(-pad, pad + 1, len(x), gen, x)
    return reflect_shift(x, dy, dx)


def batch_cutout(x: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """Zero in each image the size x size square whose centre pixel is uniform over the image.

    The square covers rows [cy - size // 2, cy - size // 2 + size), clipped at the borders.
    """
    n, _, h, w = x.shape
    top = _randint(0, h, n, gen, x) - size // 2
    left = _randint(0, w, n, gen, x) - size // 2
    ys, xs = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    in_rows = (ys >= top.view(-1, 1)) & (ys < top.view(-1, 1) + size)  # (N, H)
    in_cols = (xs >= left.view(-1, 1)) & (xs < left.view(-1, 1) + size)  # (N, W)
    square = in_rows.view(n, 1, h, 1) & in_cols.view(n, 1, 1, w)
    return x.masked_fill(square, 0)


def augment_batch(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator, epoch: int,
                  indices: torch.Tensor) -> torch.Tensor:
    """Apply flip, then translate, then cutout as `cfg` asks.

    Args:
        x: (N, C, H, W) batch, uint8 or float.
        epoch: the epoch number, for the alternating flip.
        indices: (N,) dataset index of each image, for the alternating flip.
    """
    if cfg.flip == "random":
        x = batch_flip_lr(x, gen)
    elif cfg.flip == "alternating":
        x = alternating_flip(x, epoch, indices, cfg.flip_seed)
    if cfg.translate:
        x = batch_translate(x, cfg.translate, gen)
    if cfg.cutout:
        x = batch_cutout(x, cfg.cutout, gen)
    return x
