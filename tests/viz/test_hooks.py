"""Feature maps and Grad-CAM on one model shared by several threads (as a server shares it).

The interleavings are forced, not hoped for: a hook of the test's own runs the other thread's
work in the middle of this thread's hooked pass, so each test fails every run when the guard
it checks is taken out of `convnet.viz.hooks`.
"""
from __future__ import annotations

import threading

import pytest
import torch

from convnet.models import create_model
from convnet.viz.cam import grad_cam
from convnet.viz.features import conv_layers, feature_maps
from convnet.viz.hooks import hooked

CLASSES = tuple("abcdefghij")
JOIN_S = 30  # a bound on waits that end at once when the code is right; only a hang would reach it


def no_hooks_left(model: torch.nn.Module) -> bool:
    return all(not m._forward_hooks for m in model.modules())


def conv_outputs(model: torch.nn.Module, x: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """The reference for `feature_maps`: every convolution's output, recorded with torch's own hooks in one thread."""
    maps: list[tuple[str, torch.Tensor]] = []
    handles = [m.register_forward_hook(lambda _m, _i, out, name=name: maps.append((name, out[0].clone())))
               for name, m in conv_layers(model)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return maps


def with_a_plain_pass_in_between(model: torch.nn.Module, other: torch.Tensor, hooked_call):
    """`hooked_call()`'s result when another thread runs `model(other)` (no hooks, no lock, as /predict does)
    to completion in the middle of `hooked_call`'s own forward pass, after every layer has run and been recorded."""
    caller, passes = threading.get_ident(), []

    def plain_pass() -> None:
        with torch.no_grad():
            passes.append(model(other))

    def run_plain_pass_now(module, inputs, output) -> None:
        if threading.get_ident() != caller or passes:  # only once, from the caller's own pass
            return
        thread = threading.Thread(target=plain_pass)
        thread.start()
        thread.join(JOIN_S)

    # Registered before `hooked_call` registers its own, so on the model itself it runs before theirs:
    # after every layer.
    handle = model.register_forward_hook(run_plain_pass_now)
    try:
        result = hooked_call()
    finally:
        handle.remove()
    assert len(passes) == 1, "the other thread's pass did not run inside the hooked one"
    return result


def test_a_plain_pass_in_another_thread_is_not_recorded_as_feature_maps():
    torch.manual_seed(0)
    model = create_model("tutorial").eval()
    x, other = torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 32)
    want = conv_outputs(model, x)
    got = with_a_plain_pass_in_between(model, other, lambda: feature_maps(model, x))
    assert [n for n, _ in got] == [n for n, _ in want]  # the other pass would add one map per convolution
    for (name, a), (_, b) in zip(got, want, strict=True):
        assert torch.equal(a, b), name
    assert no_hooks_left(model)


def test_a_plain_pass_in_another_thread_does_not_become_the_grad_cam_map():
    torch.manual_seed(0)
    model = create_model("tutorial").eval()
    x, other = torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 32)
    want = grad_cam(model, x, CLASSES)  # the same image explained with no other thread about
    # Recorded, the other pass's last map (no autograd graph) would be the one weighed, and Grad-CAM would fail.
    got = with_a_plain_pass_in_between(model, other, lambda: grad_cam(model, x, CLASSES))
    assert (got.layer, got.class_name) == (want.layer, want.class_name)
    assert torch.allclose(got.heatmap, want.heatmap, atol=1e-6)
    assert no_hooks_left(model)


def test_one_hooked_pass_per_model_at_a_time():
    model = create_model("tutorial").eval()
    conv = conv_layers(model)[0][1]
    at_the_door, inside = threading.Event(), threading.Event()

    def second() -> None:
        at_the_door.set()
        with hooked(model, [(conv, lambda *a: None)]):
            inside.set()

    thread = threading.Thread(target=second)
    with hooked(model, [(conv, lambda *a: None)]):
        thread.start()
        assert at_the_door.wait(JOIN_S)
        # The second thread is one call away; without the model's lock it gets in within microseconds.
        got_in_meanwhile = inside.wait(1.0)
    assert not got_in_meanwhile, "a second hooked pass ran while the first held the model"
    assert inside.wait(JOIN_S), "the second hooked pass never ran after the first ended"
    thread.join(JOIN_S)
    assert no_hooks_left(model)


def test_hooks_are_removed_when_the_pass_fails():
    model = create_model("tutorial").eval()
    with pytest.raises(RuntimeError):
        feature_maps(model, torch.randn(1, 1, 32, 32))  # wrong channel count: the pass raises
    assert no_hooks_left(model)


def test_hooks_only_go_on_the_models_own_modules():
    model, other = create_model("tutorial"), create_model("tutorial")
    with pytest.raises(ValueError), hooked(model, [(next(other.modules()), lambda *a: None)]):
        pass
