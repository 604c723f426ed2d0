"""Test-time augmentation: views against per-image NumPy references, logits against a float64 linear model."""
import numpy as np
import pytest
import torch

from convnet.errors import ConfigError
from convnet.inference.tta import TTA_WEIGHTS, tta_logits, tta_views


def numpy_views(image: np.ndarray, level: int) -> list[np.ndarray]:
    """The documented views of one (C, H, W) image, written out plainly."""
    h, w = image.shape[1:]
    padded = np.pad(image, ((0, 0), (1, 1), (1, 1)), mode="reflect")
    mirror = image[:, :, ::-1]
    views = [image, mirror][: 1 if level == 0 else 2]
    if level == 2:
        down_right, up_left = padded[:, 0:h, 0:w], padded[:, 2 : h + 2, 2 : w + 2]
        views += [down_right, down_right[:, :, ::-1], up_left, up_left[:, :, ::-1]]
    return views


@pytest.fixture
def batch() -> torch.Tensor:
    return torch.randn(4, 3, 6, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


@pytest.mark.parametrize("level, count", [(0, 1), (1, 2), (2, 6)])
def test_views_are_the_documented_ones(batch, level, count):
    views = tta_views(batch, level)
    assert len(views) == count == len(TTA_WEIGHTS[level])
    for i, image in enumerate(batch.numpy()):
        for view, expected in zip(views, numpy_views(image, level), strict=True):
            np.testing.assert_array_equal(view[i].numpy(), expected)


def test_views_keep_uint8():
    x = torch.randint(0, 256, (2, 1, 4, 4), dtype=torch.uint8)
    assert all(v.dtype == torch.uint8 for v in tta_views(x, 2))


def test_weights_sum_to_one():
    for weights in TTA_WEIGHTS.values():
        assert sum(weights) == 1.0


def test_level_zero_is_the_plain_model():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 6 * 5, 7))
    x = torch.randn(4, 3, 6, 5)
    assert torch.equal(tta_logits(model, x, 0), model(x))


@pytest.mark.parametrize("level", [1, 2])
def test_logits_are_the_weighted_mean_over_views(batch, level):
    weights_np = np.random.default_rng(1).normal(size=(3 * 6 * 5, 7))
    weights = torch.from_numpy(weights_np)

    def model(v: torch.Tensor) -> torch.Tensor:
        return v.flatten(1) @ weights

    airbench = {1: [0.5, 0.5], 2: [0.25, 0.25, 0.125, 0.125, 0.125, 0.125]}[level]
    expected = [
        sum(a * (view.reshape(-1) @ weights_np) for a, view in zip(airbench, numpy_views(image, level), strict=True))
        for image in batch.numpy()
    ]
    np.testing.assert_allclose(tta_logits(model, batch, level).numpy(), np.array(expected), rtol=1e-5, atol=1e-5)


def test_logits_are_float32_for_a_bf16_model(batch):
    logits = tta_logits(lambda v: v.flatten(1)[:, :3].to(torch.bfloat16), batch.float(), 2)
    assert logits.dtype == torch.float32


def test_unknown_level_is_refused(batch):
    with pytest.raises(ConfigError, match="0, 1 or 2"):
        tta_views(batch, 3)
