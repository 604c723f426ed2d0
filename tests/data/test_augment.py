"""Batch augmentation against plain per-image NumPy references (np.fliplr, np.pad(mode="reflect"))."""
import numpy as np
import pytest
import torch

from convnet.data.augment import (
    AugmentConfig,
    alternating_flip,
    augment_batch,
    batch_cutout,
    batch_flip_lr,
    batch_translate,
    flip_mask,
    reflect_shift,
)
from convnet.errors import ConfigError


def noise_images(n: int, c: int = 3, h: int = 12, w: int = 10, dtype=torch.uint8, seed: int = 0) -> torch.Tensor:
    """Random images with no zero pixel, so every crop, flip and cutout is recognisable."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(1, 256, (n, c, h, w), generator=g, dtype=torch.uint8)
    return x if dtype == torch.uint8 else x.to(dtype) / 255


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def flipped(x: torch.Tensor, out: torch.Tensor) -> np.ndarray:
    """Per image: True where out is the mirror of x, False where it is x; fails on anything else."""
    answers = []
    for a, b in zip(x.numpy(), out.numpy(), strict=True):
        same, mirror = np.array_equal(a, b), np.array_equal(a[:, :, ::-1], b)
        assert same != mirror
        answers.append(mirror)
    return np.array(answers)


def found_shift(image: np.ndarray, out: np.ndarray, pad: int) -> tuple[int, int]:
    """The one (dy, dx) for which out is the crop at (pad + dy, pad + dx) of the reflect-padded image."""
    h, w = image.shape[1:]
    padded = np.pad(image, ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
    matches = [
        (dy, dx)
        for dy in range(-pad, pad + 1)
        for dx in range(-pad, pad + 1)
        if np.array_equal(padded[:, pad + dy : pad + dy + h, pad + dx : pad + dx + w], out)
    ]
    assert len(matches) == 1, matches
    return matches[0]


# --- flips ---


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_random_flip_mirrors_about_half_of_the_images(dtype):
    x = noise_images(400, dtype=dtype)
    out = batch_flip_lr(x, gen(1))
    assert out.dtype == dtype
    assert 140 <= flipped(x, out).sum() <= 260  # Binomial(400, 1/2): mean 200, sd 10
    assert torch.equal(out, batch_flip_lr(x, gen(1)))
    assert not torch.equal(out, batch_flip_lr(x, gen(2)))


def test_flip_mask_is_a_fixed_half_per_dataset_index():
    everything = flip_mask(torch.arange(10_000), seed=3)
    assert 4_800 <= everything.sum() <= 5_200  # sd 50
    picked = torch.tensor([7, 9_999, 0, 7, 4_242])
    assert torch.equal(flip_mask(picked, seed=3), everything[picked])  # no matter the batch it is asked in
    assert not torch.equal(flip_mask(torch.arange(10_000), seed=4), everything)
    # Neighbouring indices are not correlated: they agree about half the time.
    assert 4_800 <= (everything[1:] == everything[:-1]).sum() <= 5_200


def test_alternating_flip_mirrors_each_image_in_every_other_epoch():
    x = noise_images(64)
    indices = torch.randperm(1000, generator=gen())[:64]
    mask = flip_mask(torch.arange(1000), seed=5)[indices].numpy()
    for epoch in range(4):
        expected = mask if epoch % 2 == 0 else ~mask
        np.testing.assert_array_equal(flipped(x, alternating_flip(x, epoch, indices, seed=5)), expected)


# --- translation ---


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("pad", [1, 2])
def test_translate_gives_a_crop_of_the_reflect_padded_image(dtype, pad):
    x = noise_images(600, dtype=dtype)
    out = batch_translate(x, pad, gen(2))
    assert out.dtype == dtype and out.shape == x.shape
    shifts = {found_shift(a, b, pad) for a, b in zip(x.numpy(), out.numpy(), strict=True)}
    assert len(shifts) == (2 * pad + 1) ** 2  # every shift happens
    assert torch.equal(out, batch_translate(x, pad, gen(2)))


def test_reflect_shift_matches_numpy_pad_for_given_shifts():
    x = noise_images(5, h=7, w=9)
    dy, dx = torch.tensor([-3, -1, 0, 2, 6]), torch.tensor([8, 0, -1, 3, -8])
    out = reflect_shift(x, dy, dx).numpy()
    for image, result, sy, sx in zip(x.numpy(), out, dy.tolist(), dx.tolist(), strict=True):
        padded = np.pad(image, ((0, 0), (8, 8), (8, 8)), mode="reflect")
        np.testing.assert_array_equal(result, padded[:, 8 + sy : 8 + sy + 7, 8 + sx : 8 + sx + 9])


def test_translate_larger_than_the_image_is_refused():
    with pytest.raises(ConfigError, match="smaller translate"):
        batch_translate(noise_images(2, h=4, w=4), 4, gen())


# --- cutout ---


@pytest.mark.parametrize("size", [1, 4, 5, 20])
def test_cutout_zeroes_one_clipped_square_per_image(size):
    x = noise_images(300, h=12, w=10)
    out = batch_cutout(x, size, gen(3))
    for image, result in zip(x.numpy(), out.numpy(), strict=True):
        zero = result == 0
        assert (zero == zero[0]).all()  # the same pixels in every channel
        np.testing.assert_array_equal(result[:, ~zero[0]], image[:, ~zero[0]])
        rows, cols = np.nonzero(zero[0].any(1))[0], np.nonzero(zero[0].any(0))[0]
        r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        assert zero[0].sum() == (r1 - r0) * (c1 - c0)  # a filled rectangle
        for start, stop, side in ((r0, r1, 12), (c0, c1, 10)):
            extent = stop - start
            assert -(-size // 2) <= extent <= size  # the square's centre lies in the image
            if start > 0 and stop < side:
                assert extent == size  # only the borders clip it
    assert torch.equal(out, batch_cutout(x, size, gen(3)))


def test_cutout_centres_cover_the_image():
    x = noise_images(2000, c=1, h=6, w=6)
    zero = (batch_cutout(x, 1, gen(4)) == 0)[:, 0]  # size 1: the zero pixel is the centre
    assert zero.sum((1, 2)).eq(1).all()
    assert zero.any(0).all()


# --- the whole pipeline ---


def test_no_augmentation_returns_the_batch_unchanged():
    x = noise_images(8)
    assert torch.equal(augment_batch(x, AugmentConfig(), gen(), 0, torch.arange(8)), x)


def test_augment_batch_flips_alternately_then_translates():
    x = noise_images(200)
    indices = torch.arange(200, 400)
    cfg = AugmentConfig(flip="alternating", translate=1, flip_seed=9)
    for epoch in (0, 1):
        out = augment_batch(x, cfg, gen(epoch), epoch, indices)
        mask = flip_mask(indices, 9).numpy() ^ (epoch % 2 == 1)
        for image, result, mirror in zip(x.numpy(), out.numpy(), mask, strict=True):
            found_shift(image[:, :, ::-1] if mirror else image, result, 1)
        assert torch.equal(out, augment_batch(x, cfg, gen(epoch), epoch, indices))


def test_augment_batch_with_everything_is_reproducible():
    x = noise_images(64, dtype=torch.float32)
    cfg = AugmentConfig(flip="random", translate=2, cutout=4)
    out = augment_batch(x, cfg, gen(7), 3, torch.arange(64))
    assert out.shape == x.shape and (out == 0).any()
    assert torch.equal(out, augment_batch(x, cfg, gen(7), 3, torch.arange(64)))
    assert not torch.equal(out, augment_batch(x, cfg, gen(8), 3, torch.arange(64)))


@pytest.mark.parametrize("kwargs", [dict(flip="sometimes"), dict(translate=-1), dict(cutout=-2)])
def test_bad_config_is_refused(kwargs):
    with pytest.raises(ConfigError):
        AugmentConfig(**kwargs)
