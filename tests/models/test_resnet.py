"""ResNet-9 and ResNet-18: parameter counts against published and hand-computed numbers,
shapes for several inputs, and a short overfit on a tiny batch."""
import pytest
import torch
import torch.nn.functional as F

from convnet.errors import ConfigError
from convnet.models import create_model


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_resnet18_cifar_stem_matches_the_published_count():
    # kuangliu/pytorch-cifar's ResNet18 (3x3 stem, 10 classes): 11,173,962 parameters.
    assert n_params(create_model("resnet", depth=18)) == 11_173_962


def test_resnet18_imagenet_stem_matches_torchvision():
    # torchvision's resnet18: 11,689,512 parameters with 1000 classes on 224x224 RGB.
    assert n_params(create_model("resnet", num_classes=1000, input_size=(224, 224), depth=18)) == 11_689_512


def resnet9_param_count(in_chans: int, w: int, num_classes: int) -> int:
    def conv_bn(c_in: int, c_out: int) -> int:
        return 9 * c_in * c_out + 2 * c_out  # 3x3 conv without bias, BatchNorm scale and shift

    return (
        conv_bn(in_chans, w)  # stem
        + conv_bn(w, 2 * w) + 2 * conv_bn(2 * w, 2 * w)  # layer 1 and its residual
        + conv_bn(2 * w, 4 * w)  # layer 2
        + conv_bn(4 * w, 8 * w) + 2 * conv_bn(8 * w, 8 * w)  # layer 3 and its residual
        + 8 * w * num_classes  # linear head without bias
    )  # fmt: skip


@pytest.mark.parametrize("in_chans, width, num_classes", [(3, 64, 10), (1, 16, 7)])
def test_resnet9_matches_the_hand_count(in_chans, width, num_classes):
    model = create_model("resnet", num_classes=num_classes, in_chans=in_chans, depth=9, width=width)
    assert n_params(model) == resnet9_param_count(in_chans, width, num_classes)


@pytest.mark.parametrize("depth", [9, 18])
@pytest.mark.parametrize(
    "in_chans, size, side",  # side: the feature map's; 224 gets the ImageNet stem (4x down)
    [(3, 16, 2), (1, 32, 4), (3, 64, 8), (3, 224, 7)],
)
def test_output_shapes(depth, in_chans, size, side):
    model = create_model("resnet", num_classes=5, in_chans=in_chans, input_size=(size, size), depth=depth, width=8)
    x = torch.randn(2, in_chans, size, size)
    features = model.forward_features(x)
    assert model.num_classes == 5 and model.in_chans == in_chans
    assert features.shape == (2, 64, side, side)
    assert model.forward_head(features).shape == (2, 5)
    assert torch.equal(model(x), model.forward_head(features))


def test_odd_size_feature_maps():
    # 28 -> 14 -> 7 -> 4 -> 2 with stride-2 convs (padding 1); 28 -> 14 -> 7 -> 3 with 2x pools.
    assert create_model("resnet", in_chans=1, input_size=(28, 28), depth=18).forward_features(
        torch.randn(1, 1, 28, 28)).shape[2:] == (4, 4)
    assert create_model("resnet", in_chans=1, input_size=(28, 28), depth=9).forward_features(
        torch.randn(1, 1, 28, 28)).shape[2:] == (3, 3)


@pytest.mark.parametrize("depth", [9, 18])
def test_twenty_steps_overfit_a_tiny_batch(depth):
    torch.manual_seed(0)
    model = create_model("resnet", num_classes=4, input_size=(16, 16), depth=depth, width=8)
    x, y = torch.randn(8, 3, 16, 16), torch.arange(8) % 4
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(depth=50), "depth must be 9 or 18"),
        (dict(stem="big"), "stem must be"),
        (dict(depth=9, input_size=(6, 6)), "at least 8x8"),
    ],
)
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        create_model("resnet", **kwargs)
