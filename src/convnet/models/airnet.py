"""airnet: the small, fast network of Keller Jordan's airbench94 (94% on CIFAR-10 in seconds).

    whiten (2x2 patch-whitening conv, frozen weights) - GELU
    3 x [conv 3x3 - maxpool 2 - BN - GELU - conv 3x3 - BN - GELU]   widths (64, 256, 256)
    global max pool - linear (no bias) x scaling

What makes it train fast, and how this file keeps it:
- The first layer whitens 2x2 patches: its filters are the eigenvectors of the training
  patches' covariance, scaled so every output channel has unit variance (`init_whitening`),
  each also negated so GELU keeps both signs. Nothing has to learn decorrelation. Only its
  bias learns, and airbench's rule stops even that after the first few epochs: the layer
  detaches its bias while `bias_learns` is off (the trainer turns it off per epoch), which also
  spares backward the first conv's input gradient.
- Every 3x3 conv starts as an identity on its first input channels (a Dirac kernel), an
  implicit residual that lets this plain stack train like a ResNet.
- BatchNorm scales are frozen at 1 (only the shifts learn), as in airbench; the modules are
  named `norm*` so a recipe can give their biases their own learning rate.
- The head is a global max pool and a bias-free linear layer times 1/9: a smaller initial
  output scale than the default, which airbench found trains faster.

Unlike airbench the pooling is global (any input of at least `min_input_size` pixels works,
224x224 and non-square too) and nothing is cast or moved to a device here: the training engine
decides. There is no downsampling stem: the whitening and the first group run at full
resolution, so the cost grows with the pixels (224x224 has 49x those of 32x32: 7.0 GMACs an
image, about 4x ResNet-18's; tests count both). For large photos `resnet`, whose stem
downsamples 4x, is the cheaper network.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from convnet.checks import is_int
from convnet.errors import ConfigError
from convnet.models.layers import GlobalPoolHead
from convnet.models.registry import register_model


def _conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
    # Identity on the first min(in, out) channels: the implicit residual described above.
    with torch.no_grad():
        nn.init.dirac_(conv.weight[: min(in_channels, out_channels)])
    return conv


def _batchnorm(channels: int, momentum: float) -> nn.BatchNorm2d:
    # `momentum` is airbench's: the weight of the old running statistics (torch's is 1 - that).
    norm = nn.BatchNorm2d(channels, eps=1e-12, momentum=1.0 - momentum)
    norm.weight.requires_grad_(False)
    return norm


class PatchWhitening(nn.Conv2d):
    """The whitening conv, (B, in, H, W) -> (B, 2 * in * width**2, H - width + 1, W - width + 1).

    Its weights never learn (`init_whitening` sets them); its bias learns while `bias_learns` is
    on. Off, the bias is detached in `forward` (airbench's `b if whiten_bias_grad else b.detach()`):
    it gets no gradient, so the optimizer leaves it as it is, and no input of the first conv
    needs a gradient any more.
    """

    def __init__(self, in_channels: int, out_channels: int, width: int):
        super().__init__(in_channels, out_channels, width, padding=0, bias=True)
        self.weight.requires_grad_(False)
        nn.init.zeros_(self.bias)
        self.bias_learns = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight, self.bias if self.bias_learns else self.bias.detach())


class ConvGroup(nn.Module):
    """conv - maxpool 2 - BN - GELU - conv - BN - GELU: halves the image, (B, in, H, W) -> (B, out, H/2, W/2)."""

    def __init__(self, in_channels: int, out_channels: int, batchnorm_momentum: float):
        super().__init__()
        self.conv1 = _conv3x3(in_channels, out_channels)
        self.norm1 = _batchnorm(out_channels, batchnorm_momentum)
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.norm2 = _batchnorm(out_channels, batchnorm_momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.norm1(F.max_pool2d(self.conv1(x), 2)))
        return F.gelu(self.norm2(self.conv2(x)))


class AirNet(nn.Module):
    def __init__(
        self,
        num_classes: int,
        in_chans: int,
        widths: tuple[int, ...],
        whiten_width: int,
        batchnorm_momentum: float,
        scaling: float,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.in_chans = in_chans
        # One filter per eigenvector of the (in_chans * k * k)-dim patch covariance, and its negation.
        whiten_channels = 2 * in_chans * whiten_width**2
        self.whiten = PatchWhitening(in_chans, whiten_channels, whiten_width)
        channels = (whiten_channels, *widths)
        self.groups = nn.Sequential(
            *(ConvGroup(a, b, batchnorm_momentum) for a, b in zip(channels[:-1], channels[1:], strict=True))
        )
        self.head = GlobalPoolHead(widths[-1], num_classes, pool="max", bias=False, scale=scaling)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> (B, widths[-1], h, w), the last group's feature map."""
        return self.groups(F.gelu(self.whiten(x)))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def init_from_data(self, images: torch.Tensor) -> None:
        """The training engine's hook for data-dependent initialisation: `init_whitening` on `images`."""
        init_whitening(self, images)


def min_input_size(whiten_width: int, groups: int) -> int:
    """The smallest image side that still leaves 1x1 after the whitening conv and the groups' pools."""
    return 2**groups + whiten_width - 1


@register_model("airnet")
def airnet(
    num_classes: int,
    in_chans: int,
    input_size: tuple[int, int],
    widths: tuple[int, ...] = (64, 256, 256),
    whiten_width: int = 2,
    batchnorm_momentum: float = 0.6,
    scaling: float = 1 / 9,
) -> AirNet:
    """Build airnet; call `init_whitening` on training images before training.

    Args:
        widths: output channels of each conv group (airbench94: 64, 256, 256).
        whiten_width: side of the whitened patches in pixels (2); the whitening layer has
            2 * in_chans * whiten_width**2 output channels.
        batchnorm_momentum: weight of the old running statistics at each update, airbench's
            convention (0.6); torch's `momentum` is 1 minus this.
        scaling: constant the logits are multiplied by (1/9).
    """
    if not isinstance(widths, (list, tuple)) or not widths or not all(is_int(w) and w >= 1 for w in widths):
        raise ConfigError(
            f"airnet widths must be one or more positive channel counts, e.g. widths=(64, 256, 256), got {widths!r}."
        )
    smallest = min_input_size(whiten_width, len(widths))
    if min(input_size) < smallest:
        raise ConfigError(
            f"airnet with {len(widths)} conv groups needs images of at least {smallest}x{smallest} pixels, "
            f"got {input_size[0]}x{input_size[1]}; resize the images or use fewer groups."
        )
    return AirNet(num_classes, in_chans, tuple(widths), whiten_width, batchnorm_momentum, scaling)


def _patches(x: torch.Tensor, width: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C * width**2, L): every width x width patch as a column, as `F.unfold`
    lays them out, built from width**2 shifted slices (F.unfold is far slower in float64 on CPU)."""
    h, w = x.shape[2] - width + 1, x.shape[3] - width + 1
    shifted = [x[:, :, i : i + h, j : j + w] for i in range(width) for j in range(width)]
    return torch.stack(shifted, dim=2).reshape(x.shape[0], -1, h * w)


def _patch_moments(images: torch.Tensor, width: int, chunk_values: int = 2**22) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and covariance (D, D) in float64 of all width x width patches, D = C * width**2.

    Patch vectors are ordered (channel, row, column), as a conv weight `(out, C, k, k)` flattens.
    Sums run over chunks of about `chunk_values` patch values (32 MiB) so large images never
    hold all their patches at once.
    """
    _, c, h, w = images.shape
    d = c * width**2
    per_image = d * (h - width + 1) * (w - width + 1)
    total = torch.zeros(d, dtype=torch.float64, device=images.device)
    outer = torch.zeros(d, d, dtype=torch.float64, device=images.device)
    count = 0
    for batch in images.split(max(1, chunk_values // per_image)):
        patches = _patches(batch.double(), width)  # (B, D, L)
        total += patches.sum((0, 2))
        outer += (patches @ patches.transpose(1, 2)).sum(0)
        count += patches.shape[0] * patches.shape[2]
    mean = total / count
    return mean, outer / count - torch.outer(mean, mean)


@torch.no_grad()
def init_whitening(model: AirNet, images: torch.Tensor, eps: float = 5e-4) -> None:
    """Set the whitening layer so its output patches have zero mean and identity covariance on `images`.

    With the patch covariance = V diag(l) V^T, the first half of the filters are the rows of
    diag(1 / sqrt(l + eps)) V^T (largest eigenvalue first), the second half their negations,
    and the bias subtracts the patch mean, so output covariance = diag(l / (l + eps)).

    Args:
        model: an `AirNet`; only `model.whiten` is changed.
        images: (N, C, H, W) float training images, normalized as the model will see them;
            a few thousand are plenty (airbench uses 5,000).
        eps: added to the eigenvalues so near-constant directions are not blown up.
    """
    layer = model.whiten
    mean, cov = _patch_moments(images, layer.kernel_size[0])
    eigenvalues, eigenvectors = torch.linalg.eigh(cov)  # ascending
    eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)
    filters = eigenvectors.T / torch.sqrt(eigenvalues.clamp(min=0) + eps)[:, None]  # (D, D), one filter per row
    bias = -(filters @ mean)
    layer.weight.copy_(torch.cat((filters, -filters)).reshape(layer.weight.shape))
    layer.bias.copy_(torch.cat((bias, -bias)))
