"""The weight average (training.ema) against the same average computed by hand in float64."""
import numpy as np
import torch
from torch import nn

from convnet.training.ema import WeightAverage


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 2))


def _as_numpy(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().double().numpy().copy() if v.is_floating_point() else v.numpy().copy()
            for k, v in model.state_dict().items()}


def test_average_of_weights_and_batchnorm_statistics_matches_a_hand_computation():
    decay = 0.8
    model = _net()
    ema = WeightAverage(model, decay)
    expected = _as_numpy(model)  # the average starts at the weights it was made from
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        with torch.no_grad():
            for p in model.parameters():  # a stand-in for an optimizer step
                p.add_(torch.randn(p.shape, generator=gen))
        model.train()(torch.randn(8, 3, 6, 6, generator=gen))  # moves BatchNorm's running stats
        ema.update(model)
        current = _as_numpy(model)
        for k, v in current.items():
            # avg <- decay * avg + (1 - decay) * current; integer counters are copied, not averaged
            expected[k] = decay * expected[k] + (1 - decay) * v if v.dtype == np.float64 else v

    got = ema.model.state_dict()
    assert set(got) == set(expected)
    assert int(got["1.num_batches_tracked"]) == 5
    for k, want in expected.items():
        np.testing.assert_allclose(got[k].double().numpy(), want, rtol=1e-5, atol=1e-6, err_msg=k)
    # After five large steps the average sits well away from the current weights.
    assert not torch.allclose(got["0.weight"], model.state_dict()["0.weight"], atol=0.1)


def test_the_average_is_a_separate_frozen_copy():
    model = _net()
    ema = WeightAverage(model, 0.5)
    before = ema.model.state_dict()["4.weight"].clone()
    with torch.no_grad():
        model[4].weight.add_(1.0)
    assert torch.equal(ema.model.state_dict()["4.weight"], before)  # untouched until update()
    assert not ema.model.training and not any(p.requires_grad for p in ema.model.parameters())
