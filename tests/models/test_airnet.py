"""airnet: the whitening layer against a float64 NumPy eigen-decomposition, parameter count
against a hand-written formula, shapes for several inputs, and bf16 autocast against fp32."""
from pathlib import Path

import numpy as np
import pytest
import torch

import convnet
from convnet.data.images import load_image
from convnet.errors import ConfigError
from convnet.models import create_model
from convnet.models.airnet import init_whitening

SAMPLE = Path(convnet.__file__).parent / "data" / "sample" / "cifar10" / "train"


@pytest.fixture(scope="module")
def cifar_images() -> torch.Tensor:
    """120 real CIFAR-10 training images (12 per class), uint8 (N, 3, 32, 32)."""
    paths = [p for d in sorted(SAMPLE.iterdir()) for p in sorted(d.glob("*.jpg"))[:12]]
    return torch.stack([load_image(p, (32, 32), 3) for p in paths])


def normalized(images: torch.Tensor) -> torch.Tensor:
    x = images.float() / 255
    return (x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), keepdim=True)


def numpy_patches(x: np.ndarray, k: int) -> np.ndarray:
    """Every k x k patch of every image as a row, ordered (channel, row, column), by plain slicing."""
    n, c, h, w = x.shape
    rows = [x[:, :, i : i + k, j : j + k].reshape(n, c * k * k) for i in range(h - k + 1) for j in range(w - k + 1)]
    return np.concatenate(rows)


@pytest.mark.parametrize("in_chans", [3, 1])
@pytest.mark.parametrize("eps", [0.0, 5e-4])
def test_whitening_layer_whitens_the_patches_it_was_fitted_on(cifar_images, in_chans, eps):
    images = cifar_images if in_chans == 3 else cifar_images.float().mean(1, keepdim=True).round().to(torch.uint8)
    x = normalized(images)
    model = create_model("airnet", in_chans=in_chans)
    init_whitening(model, x, eps=eps)

    with torch.no_grad():
        out = model.whiten(x).double().numpy()  # (N, 2D, 31, 31)
    d = in_chans * 4
    first = out[:, :d].transpose(0, 2, 3, 1).reshape(-1, d)
    np.testing.assert_allclose(out[:, d:], -out[:, :d], atol=1e-5)  # the second half is the negation
    np.testing.assert_allclose(first.mean(0), 0.0, atol=1e-4)
    cov = np.cov(first, rowvar=False, bias=True)
    # Expected covariance diag(l / (l + eps)), l the eigenvalues (descending) of the input patches' covariance.
    eigenvalues = np.linalg.eigvalsh(np.cov(numpy_patches(x.double().numpy(), 2), rowvar=False, bias=True))[::-1]
    expected = np.diag(eigenvalues / (eigenvalues + eps))
    np.testing.assert_allclose(cov, expected, atol=2e-4)
    if eps == 0.0:
        np.testing.assert_allclose(cov, np.eye(d), atol=2e-4)


def test_whitening_weights_stay_frozen(cifar_images):
    model = create_model("airnet")
    init_whitening(model, normalized(cifar_images))
    before = model.whiten.weight.clone()
    model(normalized(cifar_images[:8])).square().sum().backward()
    assert model.whiten.weight.grad is None and model.whiten.bias.grad is not None
    assert torch.equal(model.whiten.weight, before)


def test_a_whitening_bias_that_no_longer_learns_gets_no_gradient_and_changes_no_output(cifar_images):
    # airbench's `b if whiten_bias_grad else b.detach()`, against the same layers called by hand.
    model = create_model("airnet", widths=(8, 16))
    init_whitening(model, normalized(cifar_images))
    x = normalized(cifar_images[:4])
    model.whiten.bias_learns = False
    out = model(x)
    out.square().sum().backward()
    assert model.whiten.bias.grad is None
    assert model.groups[0].conv1.weight.grad is not None  # the rest still learns
    with torch.no_grad():
        whitened = torch.nn.functional.conv2d(x, model.whiten.weight, model.whiten.bias)
        reference = model.head(model.groups(torch.nn.functional.gelu(whitened)))
    assert torch.equal(out.detach(), reference)


def expected_param_count(in_chans: int, widths: tuple[int, ...], k: int, num_classes: int) -> int:
    whiten_out = 2 * in_chans * k * k
    count = whiten_out * in_chans * k * k + whiten_out  # whitening conv weights and bias
    for c_in, c_out in zip((whiten_out, *widths[:-1]), widths, strict=True):
        count += 9 * c_in * c_out + 2 * c_out  # conv1 (no bias) and its BatchNorm scale and shift
        count += 9 * c_out * c_out + 2 * c_out  # conv2 and its BatchNorm
    return count + widths[-1] * num_classes  # linear head without bias


@pytest.mark.parametrize(
    "kwargs, expected_args",
    [
        (dict(), (3, (64, 256, 256), 2, 10)),
        (dict(in_chans=1, num_classes=7, input_size=(28, 28), widths=(16, 32), whiten_width=3), (1, (16, 32), 3, 7)),
    ],
)
def test_parameter_count_matches_the_formula(kwargs, expected_args):
    model = create_model("airnet", **kwargs)
    assert sum(p.numel() for p in model.parameters()) == expected_param_count(*expected_args)


def test_default_parameter_count():
    # Hand-summed: 312 (whitening) + 50,944 + 738,304 + 1,180,672 (groups) + 2,560 (head).
    assert sum(p.numel() for p in create_model("airnet").parameters()) == 1_972_792


@pytest.mark.parametrize(
    "in_chans, size, feature_side",
    [(3, 32, 3), (1, 28, 3), (3, 64, 7), (3, 224, 27), (3, 16, 1)],
)
def test_output_shapes(in_chans, size, feature_side):
    model = create_model("airnet", num_classes=10, in_chans=in_chans, input_size=(size, size))
    x = torch.randn(2, in_chans, size, size)
    assert model.num_classes == 10 and model.in_chans == in_chans
    features = model.forward_features(x)
    assert features.shape == (2, 256, feature_side, feature_side)
    assert model.forward_head(features).shape == (2, 10)
    assert torch.equal(model(x), model.forward_head(features))


def test_too_small_input_is_refused():
    with pytest.raises(ConfigError, match="at least 9x9"):
        create_model("airnet", input_size=(8, 8))


def test_convs_start_as_identity_on_their_first_channels():
    conv = create_model("airnet").groups[1].conv2  # 256 -> 256
    x = torch.randn(2, 256, 5, 5)
    torch.testing.assert_close(conv(x), x)


@pytest.mark.parametrize("train", [True, False])
def test_bf16_autocast_agrees_with_fp32(cifar_images, train):
    x = normalized(cifar_images[:32])
    torch.manual_seed(0)
    model = create_model("airnet")
    init_whitening(model, x)
    model = model.to(memory_format=torch.channels_last).train(train)
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        reference = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
    assert low.dtype == torch.bfloat16
    # bf16 keeps ~3 significant digits; after 7 layers (and batch statistics in training mode)
    # logits agree to 8% of their largest magnitude.
    assert (low.float() - reference).abs().max() <= 0.08 * reference.abs().max()
