"""channel_stats against NumPy's float64 mean and std of the same pixels."""
import numpy as np
import torch

from convnet.data.dataset import channel_stats


def test_channel_stats_match_numpy_float64():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (50, 3, 7, 5), dtype=np.uint8)
    images[:, 2] //= 4  # channels with different spreads
    mean, std = channel_stats(torch.from_numpy(images))
    x = images.astype(np.float64) / 255
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(std, x.std(axis=(0, 2, 3), ddof=1), rtol=1e-12)


def test_channel_stats_of_a_constant_channel():
    mean, std = channel_stats(torch.full((4, 1, 3, 3), 51, dtype=torch.uint8))
    assert mean == (0.2,) and std == (0.0,)
