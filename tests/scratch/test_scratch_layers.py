"""Every scratch layer against torch in float64: outputs, input gradients, parameter gradients.

Shapes, strides and paddings are drawn by hypothesis; the tolerance is relative 1e-10 (with an
absolute floor of 1e-12 for values that cancel to about zero).
"""
import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

from convnet.scratch import layers as L

RTOL, ATOL = 1e-10, 1e-12
SETTINGS = settings(max_examples=30, deadline=None)


def assert_close(actual, expected):
    np.testing.assert_allclose(actual, expected.detach().numpy() if isinstance(expected, torch.Tensor) else expected,
                               rtol=RTOL, atol=ATOL)


def check_layer(layer: L.Module, reference: nn.Module, x: np.ndarray, rng: np.random.Generator) -> None:
    """Same weights in both; compare forward, the input gradient and every parameter gradient."""
    reference = reference.double()
    reference.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    yt = reference(xt)
    y = layer.forward(x)
    assert_close(y, yt)
    g = rng.standard_normal(y.shape)
    yt.backward(torch.from_numpy(g))
    assert_close(layer.backward(g), xt.grad)
    ref_params = dict(reference.named_parameters())
    assert set(ref_params) == {name for name, _ in layer.named_parameters()}
    for name, p in layer.named_parameters():
        assert_close(p.grad, ref_params[name].grad)


def randomize(layer: L.Module, rng: np.random.Generator) -> None:
    """Random values everywhere (biases and batch-norm weights start as constants)."""
    for p in layer.parameters():
        p.data = rng.standard_normal(p.shape)


@st.composite
def conv_case(draw):
    k, p = draw(st.integers(1, 4)), draw(st.integers(0, 2))
    least = max(1, k - 2 * p)  # the smallest side with a non-empty output
    return dict(
        n=draw(st.integers(1, 3)),
        c_in=draw(st.integers(1, 4)),
        c_out=draw(st.integers(1, 5)),
        k=k,
        s=draw(st.integers(1, 3)),
        p=p,
        h=draw(st.integers(least, least + 7)),
        w=draw(st.integers(least, least + 7)),
        bias=draw(st.booleans()),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


@SETTINGS
@given(conv_case())
def test_conv2d_matches_torch(case):
    rng = np.random.default_rng(case["seed"])
    layer = L.Conv2d(case["c_in"], case["c_out"], case["k"], case["s"], case["p"], bias=case["bias"], rng=rng)
    randomize(layer, rng)
    reference = nn.Conv2d(case["c_in"], case["c_out"], case["k"], case["s"], case["p"], bias=case["bias"])
    check_layer(layer, reference, rng.standard_normal((case["n"], case["c_in"], case["h"], case["w"])), rng)


@st.composite
def pool_case(draw):
    k = draw(st.integers(1, 4))
    return dict(
        shape=(draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(k, k + 8)),
               draw(st.integers(k, k + 8))),
        k=k,
        s=draw(st.integers(1, 4)),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


@SETTINGS
@given(pool_case())
def test_max_pool_matches_torch(case):
    rng = np.random.default_rng(case["seed"])
    check_layer(L.MaxPool2d(case["k"], case["s"]), nn.MaxPool2d(case["k"], case["s"]),
                rng.standard_normal(case["shape"]), rng)


@SETTINGS
@given(pool_case())
def test_max_pool_ties_go_where_torch_sends_them(case):
    # Integer inputs from {0, 1, 2} tie often (as ReLU zeros do): the gradient must pick torch's element.
    rng = np.random.default_rng(case["seed"])
    check_layer(L.MaxPool2d(case["k"], case["s"]), nn.MaxPool2d(case["k"], case["s"]),
                rng.integers(0, 3, case["shape"]).astype(np.float64), rng)


@SETTINGS
@given(pool_case())
def test_avg_pool_matches_torch(case):
    rng = np.random.default_rng(case["seed"])
    check_layer(L.AvgPool2d(case["k"], case["s"]), nn.AvgPool2d(case["k"], case["s"]),
                rng.standard_normal(case["shape"]), rng)


@SETTINGS
@given(pool_case())
def test_global_avg_pool_matches_torch(case):
    rng = np.random.default_rng(case["seed"])
    check_layer(L.GlobalAvgPool2d(), nn.AdaptiveAvgPool2d(1), rng.standard_normal(case["shape"]), rng)


@SETTINGS
@given(st.integers(1, 4), st.integers(1, 30), st.integers(1, 30), st.booleans(), st.integers(0, 2**32 - 1))
def test_linear_matches_torch(n, f_in, f_out, bias, seed):
    rng = np.random.default_rng(seed)
    layer = L.Linear(f_in, f_out, bias=bias, rng=rng)
    randomize(layer, rng)
    check_layer(layer, nn.Linear(f_in, f_out, bias=bias), rng.standard_normal((n, f_in)), rng)


@SETTINGS
@given(st.lists(st.integers(1, 5), min_size=2, max_size=4), st.integers(0, 2**32 - 1))
def test_relu_and_flatten_match_torch(shape, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    check_layer(L.ReLU(), nn.ReLU(), x, rng)
    check_layer(L.Flatten(), nn.Flatten(), x, rng)


@SETTINGS
@given(st.integers(2, 5), st.integers(1, 4), st.integers(1, 4), st.booleans(), st.integers(0, 2**32 - 1))
def test_batchnorm_matches_torch_in_train_and_eval(n, c, hw, image, seed):
    rng = np.random.default_rng(seed)
    layer, reference = (L.BatchNorm2d(c), nn.BatchNorm2d(c)) if image else (L.BatchNorm1d(c), nn.BatchNorm1d(c))
    randomize(layer, rng)
    shape = (n, c, hw, hw + 1) if image else (n, c)
    x = rng.standard_normal(shape) * 3 + 1
    check_layer(layer, reference, x, rng)  # train mode: batch statistics
    for name, value in reference.state_dict().items():  # the running statistics moved alike
        assert_close(layer.state_dict()[name], value)
    layer.eval()
    check_layer(layer, reference.eval(), rng.standard_normal(shape), rng)


def test_dropout_zeroes_a_share_and_scales_the_rest():
    layer = L.Dropout(0.25, rng=np.random.default_rng(0))
    x = np.random.default_rng(1).uniform(1, 2, (200, 500))
    y = layer.forward(x)
    kept = y != 0
    assert abs(1 - kept.mean() - 0.25) < 0.01
    np.testing.assert_allclose(y[kept], x[kept] / 0.75, rtol=RTOL)
    g = np.ones_like(x)
    np.testing.assert_allclose(layer.backward(g), np.where(kept, 1 / 0.75, 0.0), rtol=RTOL)
    layer.eval()
    assert np.array_equal(layer.forward(x), x)


def test_state_dict_names_order_and_round_trip_match_torch():
    torch.manual_seed(0)
    reference = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4, 2)).double()
    net = L.Sequential(L.Conv2d(3, 4, 3), L.BatchNorm2d(4), L.ReLU(), L.Flatten(), L.Linear(4, 2))
    assert list(net.state_dict()) == list(reference.state_dict())
    net.load_state_dict({k: v.numpy() for k, v in reference.state_dict().items()})
    for name, value in reference.state_dict().items():
        np.testing.assert_array_equal(net.state_dict()[name], value.numpy())
    with pytest.raises(ValueError, match="missing"):
        net.load_state_dict({"0.weight": np.zeros((4, 3, 3, 3))})


def test_zero_grad_train_eval_and_astype():
    net = L.Sequential(L.Linear(3, 2), L.Dropout(0.5))
    net.forward(np.ones((1, 3)))
    net.backward(np.ones((1, 2)))
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    assert not net.eval()[1].training and net.train()[1].training
    net.astype(np.float32)
    assert net.forward(np.ones((1, 3), np.float32)).dtype == np.float32
