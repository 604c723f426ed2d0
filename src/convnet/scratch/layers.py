"""Layers in plain NumPy, each with a hand-written backward pass, mirroring torch.nn.

Every layer caches what its backward needs during `forward(x)`; `backward(grad_out)` returns
the gradient with respect to the input and *adds* the parameter gradients into `param.grad`
(as torch accumulates them until `zero_grad()`). Images are (N, C, H, W) as in torch, and the
weight layouts are torch's: Conv2d (out, in, kh, kw), Linear (out, in), so a torch state_dict
loads as it is.

Convolution and pooling see the image through `sliding_window_view` (a view, no copy): the
convolution is one matrix product of the unrolled windows ("im2col") with the filters. Going
back, window gradients are added into the image one kernel offset at a time: k*k array
operations, never a Python loop over pixels.
"""
from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


class Parameter:
    """A trainable array and the gradient that backward() accumulates for it (None until then)."""

    def __init__(self, data: np.ndarray):
        self.data = data
        self.grad: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    def accumulate(self, grad: np.ndarray) -> None:
        self.grad = grad if self.grad is None else self.grad + grad


class Module:
    """Base of every layer and network: parameters, state_dict, train/eval, like torch.nn.Module.

    Parameters are the `Parameter` attributes, sub-modules the `Module` attributes, both in
    the order they were assigned, so names come out as torch's ("layers.0.weight").
    """

    training = True
    buffers: tuple[str, ...] = ()  # array attributes saved in state_dict but not trained

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward(self, grad: np.ndarray) -> np.ndarray:
        """Gradient of the loss with respect to the last forward's input, given the one of its output."""
        raise NotImplementedError

    def named_children(self) -> list[tuple[str, Module]]:
        return [(k, v) for k, v in vars(self).items() if isinstance(v, Module)]

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        for name, value in vars(self).items():
            if isinstance(value, Parameter):
                yield prefix + name, value
        for name, child in self.named_children():
            yield from child.named_parameters(f"{prefix}{name}.")

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def state_dict(self, prefix: str = "") -> dict[str, np.ndarray]:
        """Copies of the parameters and buffers, named and ordered as torch names them."""
        state = {prefix + name: p.data.copy() for name, p in vars(self).items() if isinstance(p, Parameter)}
        state.update({prefix + name: np.array(getattr(self, name)) for name in self.buffers})
        for name, child in self.named_children():
            state.update(child.state_dict(f"{prefix}{name}."))
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy arrays into the parameters and buffers, cast to their dtype.

        Raises:
            ValueError: when names or shapes differ from this module's (as torch's strict load).
        """
        own = self.state_dict()
        if set(own) != set(state):
            missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
            raise ValueError(f"state_dict names differ: missing {missing}, unexpected {unexpected}")
        for name, value in state.items():
            if np.shape(value) != own[name].shape:
                raise ValueError(f"{name} has shape {np.shape(value)}, the module expects {own[name].shape}")
            self._set(name, np.asarray(value).astype(own[name].dtype))

    def _set(self, name: str, value: np.ndarray) -> None:
        head, _, rest = name.partition(".")
        if rest:
            dict(self.named_children())[head]._set(rest, value)
        elif isinstance(getattr(self, head), Parameter):
            getattr(self, head).data = value
        else:
            setattr(self, head, value)

    def train(self, mode: bool = True) -> Module:
        self.training = mode
        for _, child in self.named_children():
            child.train(mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def astype(self, dtype: np.dtype) -> Module:
        """Cast parameters and floating-point buffers to dtype (float64 or float32), in place."""
        for p in self.parameters():
            p.data, p.grad = p.data.astype(dtype), None
        for module in self._modules():
            for name in module.buffers:
                value = getattr(module, name)
                if np.issubdtype(value.dtype, np.floating):
                    setattr(module, name, value.astype(dtype))
        return self

    def _modules(self) -> Iterator[Module]:
        yield self
        for _, child in self.named_children():
            yield from child._modules()


def _glorot(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int, fan_out: int, dtype) -> np.ndarray:
    # Glorot-uniform weights and zero biases, as the torch builder (models.sequential) sets them.
    bound = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


def _windows(x: np.ndarray, kernel: int, stride: int, padding: int) -> np.ndarray:
    """(N, C, H, W) -> view (N, C, Ho, Wo, k, k): every window the kernel visits."""
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    return sliding_window_view(x, (kernel, kernel), axis=(2, 3))[:, :, ::stride, ::stride]


def _add_windows(dwin: np.ndarray, shape: tuple[int, ...], stride: int, padding: int) -> np.ndarray:
    """The adjoint of `_windows`: add window gradients (N, C, Ho, Wo, k, k) into an image of `shape`."""
    n, c, h, w = shape
    _, _, ho, wo, k, _ = dwin.shape
    dx = np.zeros((n, c, h + 2 * padding, w + 2 * padding), dtype=dwin.dtype)
    for i in range(k):
        for j in range(k):
            dx[:, :, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride] += dwin[..., i, j]
    return dx[:, :, padding : padding + h, padding : padding + w]


class Conv2d(Module):
    """2-D convolution (cross-correlation, as torch and Keras compute it) with square kernels."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
        dtype=np.float64,
        rng: np.random.Generator | None = None,
    ):
        rng = rng or np.random.default_rng()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        fan = kernel_size * kernel_size
        self.weight = Parameter(_glorot(rng, (out_channels, in_channels, kernel_size, kernel_size),
                                        in_channels * fan, out_channels * fan, dtype))
        self.bias = Parameter(np.zeros(out_channels, dtype)) if bias else None

    def forward(self, x: np.ndarray) -> np.ndarray:
        win = _windows(x, self.kernel_size, self.stride, self.padding)  # (N, C, Ho, Wo, k, k)
        n, c, ho, wo, k, _ = win.shape
        # im2col: one row per output pixel, one column per (channel, ky, kx) of its window.
        self._cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, c * k * k)
        self._x_shape = x.shape
        out = self._cols @ self.weight.data.reshape(len(self.weight.data), -1).T  # (N*Ho*Wo, O)
        if self.bias is not None:
            out += self.bias.data
        return np.ascontiguousarray(out.reshape(n, ho, wo, -1).transpose(0, 3, 1, 2))  # (N, O, Ho, Wo)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        n, o, ho, wo = grad.shape
        g = grad.transpose(0, 2, 3, 1).reshape(-1, o)  # (N*Ho*Wo, O)
        self.weight.accumulate((g.T @ self._cols).reshape(self.weight.shape))
        if self.bias is not None:
            self.bias.accumulate(g.sum(axis=0))
        c, k = self._x_shape[1], self.kernel_size
        dcols = (g @ self.weight.data.reshape(o, -1)).reshape(n, ho, wo, c, k, k)
        return _add_windows(dcols.transpose(0, 3, 1, 2, 4, 5), self._x_shape, self.stride, self.padding)


class MaxPool2d(Module):
    """Max over each window; the gradient goes to the first maximum in the window, as in torch."""

    def __init__(self, kernel_size: int, stride: int | None = None):
        self.kernel_size, self.stride = kernel_size, stride or kernel_size

    def forward(self, x: np.ndarray) -> np.ndarray:
        # The max of k*k strided slices (one per kernel offset) is the max of each window, and
        # cheaper than argmax over copied windows.
        self._x_shape = x.shape
        self._win = _windows(x, self.kernel_size, self.stride, 0)  # (N, C, Ho, Wo, k, k) view
        offsets = np.ndindex(self.kernel_size, self.kernel_size)
        self._out = functools.reduce(np.maximum, (self._win[..., i, j] for i, j in offsets))
        return self._out

    def backward(self, grad: np.ndarray) -> np.ndarray:
        k = self.kernel_size
        dwin = np.zeros((*grad.shape, k, k), dtype=grad.dtype)
        taken = np.zeros(grad.shape, dtype=bool)  # windows whose maximum was already found
        for i, j in np.ndindex(k, k):  # row-major: the first maximum wins ties, as in torch
            first = (self._win[..., i, j] == self._out) & ~taken
            dwin[..., i, j] = grad * first
            taken |= first
        return _add_windows(dwin, self._x_shape, self.stride, 0)


class AvgPool2d(Module):
    """Mean over each window."""

    def __init__(self, kernel_size: int, stride: int | None = None):
        self.kernel_size, self.stride = kernel_size, stride or kernel_size

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._x_shape = x.shape
        return _windows(x, self.kernel_size, self.stride, 0).mean(axis=(-2, -1))

    def backward(self, grad: np.ndarray) -> np.ndarray:
        k = self.kernel_size
        dwin = np.broadcast_to((grad / (k * k))[..., None, None], (*grad.shape, k, k))
        return _add_windows(dwin, self._x_shape, self.stride, 0)


class GlobalAvgPool2d(Module):
    """Mean over the whole image: (N, C, H, W) -> (N, C, 1, 1), as torch's AdaptiveAvgPool2d(1)."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._x_shape = x.shape
        return x.mean(axis=(2, 3), keepdims=True)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        h, w = self._x_shape[2:]
        return np.broadcast_to(grad / (h * w), self._x_shape).copy()


class ReLU(Module):
    def forward(self, x: np.ndarray) -> np.ndarray:
        self._mask = x > 0
        return np.maximum(x, 0)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return grad * self._mask


class Flatten(Module):
    """(N, ...) -> (N, features), in (C, H, W) order as torch flattens."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._x_shape = x.shape
        return x.reshape(len(x), -1)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return grad.reshape(self._x_shape)


class Linear(Module):
    """y = x W^T + b with W of shape (out_features, in_features)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype=np.float64,
                 rng: np.random.Generator | None = None):
        rng = rng or np.random.default_rng()
        self.weight = Parameter(_glorot(rng, (out_features, in_features), in_features, out_features, dtype))
        self.bias = Parameter(np.zeros(out_features, dtype)) if bias else None

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._x = x
        out = x @ self.weight.data.T
        return out + self.bias.data if self.bias is not None else out

    def backward(self, grad: np.ndarray) -> np.ndarray:
        self.weight.accumulate(grad.T @ self._x)
        if self.bias is not None:
            self.bias.accumulate(grad.sum(axis=0))
        return grad @ self.weight.data


class Dropout(Module):
    """Zero each input with probability `rate` while training, scaling the rest by 1/(1-rate)."""

    def __init__(self, rate: float = 0.5, rng: np.random.Generator | None = None):
        self.rate = rate
        self.rng = rng or np.random.default_rng()

    def forward(self, x: np.ndarray) -> np.ndarray:
        if not self.training or self.rate == 0:
            self._scale = None
            return x
        keep = self.rng.random(x.shape) >= self.rate
        self._scale = keep.astype(x.dtype) / (1.0 - self.rate) if self.rate < 1 else np.zeros_like(x)
        return x * self._scale

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return grad if self._scale is None else grad * self._scale


class _BatchNorm(Module):
    """Batch normalization: batch statistics while training, running ones in eval, as torch.

    The running variance is updated with the unbiased batch variance, the normalization uses
    the biased one: both exactly as torch does, so a torch state_dict behaves the same here.
    """

    buffers = ("running_mean", "running_var", "num_batches_tracked")
    axes: tuple[int, ...] = ()  # the axes statistics are taken over

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, dtype=np.float64):
        self.eps, self.momentum = eps, momentum
        self.weight = Parameter(np.ones(num_features, dtype))
        self.bias = Parameter(np.zeros(num_features, dtype))
        self.running_mean = np.zeros(num_features, dtype)
        self.running_var = np.ones(num_features, dtype)
        self.num_batches_tracked = np.array(0, dtype=np.int64)

    def _per_channel(self, v: np.ndarray) -> np.ndarray:
        return v.reshape((1, -1) + (1,) * (len(self.axes) - 1))

    def forward(self, x: np.ndarray) -> np.ndarray:
        if self.training:
            mean, var = x.mean(axis=self.axes), x.var(axis=self.axes)
            n = x.size // len(mean)
            m = self.momentum
            self.running_mean = (1 - m) * self.running_mean + m * mean
            self.running_var = (1 - m) * self.running_var + m * var * n / max(n - 1, 1)
            self.num_batches_tracked = self.num_batches_tracked + 1
        else:
            mean, var = self.running_mean, self.running_var
        self._inv_std = self._per_channel(1.0 / np.sqrt(var + self.eps))
        self._xhat = (x - self._per_channel(mean)) * self._inv_std
        return self._xhat * self._per_channel(self.weight.data) + self._per_channel(self.bias.data)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        self.bias.accumulate(grad.sum(axis=self.axes))
        self.weight.accumulate((grad * self._xhat).sum(axis=self.axes))
        dxhat = grad * self._per_channel(self.weight.data)
        if not self.training:  # running statistics are constants
            return dxhat * self._inv_std
        # The batch mean and variance depend on x too: the two correction terms below.
        mean_dxhat = dxhat.mean(axis=self.axes, keepdims=True)
        mean_dxhat_xhat = (dxhat * self._xhat).mean(axis=self.axes, keepdims=True)
        return self._inv_std * (dxhat - mean_dxhat - self._xhat * mean_dxhat_xhat)


class BatchNorm2d(_BatchNorm):
    axes = (0, 2, 3)  # (N, C, H, W): per channel over batch and pixels


class BatchNorm1d(_BatchNorm):
    axes = (0,)  # (N, F): per feature over the batch


class Sequential(Module):
    """Layers applied in order; children are named "0", "1", ... as in torch."""

    def __init__(self, *layers: Module):
        self.layers = list(layers)

    def named_children(self) -> list[tuple[str, Module]]:
        return [(str(i), m) for i, m in enumerate(self.layers)]

    def __getitem__(self, i: int) -> Module:
        return self.layers[i]

    def __len__(self) -> int:
        return len(self.layers)

    def forward(self, x: np.ndarray) -> np.ndarray:
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, grad: np.ndarray) -> np.ndarray:
        for layer in reversed(self.layers):
            grad = layer.backward(grad)
        return grad
