"""The optimizers against independent references: torch's SGD, and the SVD for Muon."""
import dataclasses

import pytest
import torch
import torch.nn as nn

from convnet.errors import ConfigError
from convnet.models import create_model
from convnet.training.config import TrainConfig
from convnet.training.optim import MuonSGD, build_optimizer, orthogonalize


def _rotated(g: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
    """o expressed in g's singular bases: U^T o V, diagonal when o shares g's singular vectors."""
    u, _, vh = torch.linalg.svd(g.double(), full_matrices=False)
    return u.T @ o.double() @ vh.T


@pytest.mark.parametrize("shape", [(64, 216), (128, 1152), (300, 40)])
def test_orthogonalize_keeps_singular_vectors_and_flattens_singular_values(shape):
    g = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    g[:, :5] *= 30  # a few dominant directions, as momentum has, that plain SGD would follow
    o = orthogonalize(g)
    assert o.shape == g.shape and o.dtype == g.dtype
    r = _rotated(g, o)
    diag = r.diagonal()
    off = r - torch.diag(diag)
    assert off.norm() / diag.norm() < 0.05
    # Muon's three quintic steps land the singular values in a band around 1, not exactly on it:
    # the spread of the singular values (over 10x in g) shrinks to under 4x.
    s = torch.linalg.svdvals(o.double())
    assert torch.linalg.cond(g.double()) > 10
    assert s.max() < 1.3 and s.max() / s.min() < 4


def test_sgd_groups_match_torch_sgd():
    torch.manual_seed(0)
    a, b = nn.Linear(5, 4), nn.Linear(5, 4)
    b.load_state_dict(a.state_dict())
    ours = MuonSGD([{"params": [a.weight], "weight_decay": 0.01}, {"params": [a.bias], "lr": 0.3}], lr=0.1,
                   momentum=0.85)
    ref = torch.optim.SGD([{"params": [b.weight], "weight_decay": 0.01}, {"params": [b.bias], "lr": 0.3}], lr=0.1,
                          momentum=0.85, nesterov=True)
    x = torch.randn(16, 5)
    for _ in range(5):
        for model, opt in ((a, ours), (b, ref)):
            opt.zero_grad()
            model(x).square().sum().backward()
            opt.step()
    torch.testing.assert_close(a.weight, b.weight, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(a.bias, b.bias, rtol=1e-6, atol=1e-7)


def test_muon_step_normalizes_the_filter_bank_and_follows_the_orthogonalized_gradient():
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(8, 3, 3, 3) * 0.3)
    w.grad = torch.randn_like(w)
    before = w.detach().clone()
    opt = MuonSGD([{"params": [w], "muon": True, "momentum": 0.6}], lr=0.05, momentum=0.85)
    opt.step()
    normalized = before * (8**0.5 / before.norm())
    update = ((normalized - w.detach()) / 0.05).reshape(8, -1)
    grad = w.grad.reshape(8, -1)  # first Nesterov step: (1 + momentum) * grad, same directions
    r = _rotated(grad, update)
    assert (r - torch.diag(r.diagonal())).norm() / r.diagonal().norm() < 0.05
    assert (r.diagonal() > 0.5).all()


def test_build_optimizer_groups_for_muon():
    model = create_model("airnet", num_classes=10, in_chans=3, input_size=(32, 32), widths=(8, 16, 16))
    config = TrainConfig(model="airnet", optimizer="muon", lr=0.5, bias_lr_scale=64, weight_decay=0.01, bias_decay=True,
                         muon_lr=0.2)
    opt = build_optimizer(model, config)
    by_kind = {("muon" if g["muon"] else g["lr"]): g for g in opt.param_groups}
    convs = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d) and m.weight.requires_grad]
    assert {id(p) for p in by_kind["muon"]["params"]} == {id(p) for p in convs} and by_kind["muon"]["lr"] == 0.2
    assert [p.ndim for p in by_kind[0.5]["params"]] == [2]  # the head
    bias_group = by_kind[32.0]
    assert bias_group["weight_decay"] == pytest.approx(0.01 / 64)  # same decay per step as the weights


def test_muon_refuses_models_without_batchnorm():
    model = create_model("tutorial", num_classes=10, in_chans=3, input_size=(32, 32))
    with pytest.raises(ConfigError, match="BatchNorm"):
        build_optimizer(model, dataclasses.replace(TrainConfig(), optimizer="muon"))
