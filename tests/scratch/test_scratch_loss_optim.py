"""Softmax cross-entropy and the optimizers against torch in float64."""
import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from convnet.scratch.layers import Parameter
from convnet.scratch.losses import CrossEntropyLoss, softmax
from convnet.scratch.optim import SGD, Adam

RTOL, ATOL = 1e-10, 1e-12
SETTINGS = settings(max_examples=30, deadline=None)


@SETTINGS
@given(st.integers(1, 8), st.integers(2, 12), st.floats(0.1, 200.0), st.integers(0, 2**32 - 1))
def test_cross_entropy_matches_torch(n, k, scale, seed):
    # Large scales give logits in the hundreds: the loss must not overflow where torch does not.
    rng = np.random.default_rng(seed)
    logits, targets = rng.standard_normal((n, k)) * scale, rng.integers(0, k, n)
    lt = torch.from_numpy(logits).requires_grad_(True)
    expected = F.cross_entropy(lt, torch.from_numpy(targets))
    expected.backward()
    criterion = CrossEntropyLoss()
    np.testing.assert_allclose(criterion(logits, targets), expected.item(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(criterion.backward(), lt.grad.numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(softmax(logits), torch.softmax(lt, dim=1).detach().numpy(), rtol=RTOL, atol=ATOL)


def run_both(make_scratch, make_torch, seed: int, steps: int = 6):
    """Apply the same gradients for several steps to the same start values in both optimizers.

    One parameter gets no gradient on odd steps: both must leave it alone then.
    """
    rng = np.random.default_rng(seed)
    starts = [rng.standard_normal((3, 4)), rng.standard_normal(5)]
    ours = [Parameter(s.copy()) for s in starts]
    theirs = [torch.tensor(s, requires_grad=True) for s in starts]
    opt, opt_t = make_scratch(ours), make_torch(theirs)
    for step in range(steps):
        opt.zero_grad()
        opt_t.zero_grad()
        for i, (p, pt) in enumerate(zip(ours, theirs, strict=True)):
            if i == 1 and step % 2:
                continue
            g = rng.standard_normal(p.shape)
            p.grad, pt.grad = g, torch.from_numpy(g.copy())
        opt.step()
        opt_t.step()
    for p, pt, start in zip(ours, theirs, starts, strict=True):
        np.testing.assert_allclose(p.data, pt.detach().numpy(), rtol=RTOL, atol=ATOL)
        assert not np.array_equal(p.data, start)  # the steps did move it


@SETTINGS
@given(st.floats(1e-3, 0.5), st.sampled_from([0.0, 0.5, 0.9]), st.sampled_from([0.0, 1e-2]), st.booleans(),
       st.integers(0, 2**32 - 1))
def test_sgd_matches_torch(lr, momentum, weight_decay, nesterov, seed):
    nesterov = nesterov and momentum > 0  # torch allows Nesterov only with momentum
    run_both(
        lambda ps: SGD(ps, lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov),
        lambda ps: torch.optim.SGD(ps, lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov),
        seed,
    )


@SETTINGS
@given(st.floats(1e-4, 0.1), st.sampled_from([(0.9, 0.999), (0.5, 0.9)]), st.sampled_from([0.0, 1e-2]),
       st.integers(0, 2**32 - 1))
def test_adam_matches_torch(lr, betas, weight_decay, seed):
    run_both(
        lambda ps: Adam(ps, lr, betas=betas, weight_decay=weight_decay),
        lambda ps: torch.optim.Adam(ps, lr, betas=betas, weight_decay=weight_decay),
        seed,
    )


def test_adam_defaults_are_torchs():
    p, pt = Parameter(np.array([1.0, -2.0])), torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    opt, opt_t = Adam([p]), torch.optim.Adam([pt])
    for _ in range(3):
        p.grad, pt.grad = np.array([0.3, -0.1]), torch.tensor([0.3, -0.1], dtype=torch.float64)
        opt.step()
        opt_t.step()
    np.testing.assert_allclose(p.data, pt.detach().numpy(), rtol=RTOL)


def test_float32_parameters_stay_float32():
    # A NumPy float64 scalar in an update would silently turn float32 weights into float64.
    for make in (lambda ps: Adam(ps), lambda ps: SGD(ps, 0.1, momentum=0.9, weight_decay=1e-4)):
        p = Parameter(np.ones(3, np.float32))
        opt = make([p])
        for _ in range(2):
            p.grad = np.full(3, 0.5, np.float32)
            opt.step()
        assert p.data.dtype == np.float32
