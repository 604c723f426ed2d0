"""Feature maps and Grad-CAM on one model shared by several threads (as a server shares it)."""
from __future__ import annotations

import threading

import pytest
import torch

from convnet.models import create_model
from convnet.viz.cam import grad_cam
from convnet.viz.features import feature_maps
from convnet.viz.hooks import hooked

CLASSES = tuple("abcdefghij")


def no_hooks_left(model: torch.nn.Module) -> bool:
    return all(not m._forward_hooks for m in model.modules())


def test_threads_sharing_a_model_each_get_their_own_maps():
    torch.manual_seed(0)
    model = create_model("tutorial").eval()
    images = [torch.randn(1, 3, 32, 32) for _ in range(4)]
    want_maps = [feature_maps(model, x) for x in images]
    want_cams = [grad_cam(model, x, CLASSES).heatmap for x in images]
    errors: list[str] = []

    def worker(k: int) -> None:
        for _ in range(15):
            maps = feature_maps(model, images[k])
            # Another thread's pass seen by this thread's hooks would add maps or change them.
            if [n for n, _ in maps] != [n for n, _ in want_maps[k]] or any(
                not torch.equal(a, b) for (_, a), (_, b) in zip(maps, want_maps[k], strict=True)
            ):
                errors.append(f"thread {k}: feature maps mixed with another thread's")
            if not torch.allclose(grad_cam(model, images[k], CLASSES).heatmap, want_cams[k], atol=1e-6):
                errors.append(f"thread {k}: Grad-CAM mixed with another thread's")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert no_hooks_left(model)


def test_plain_inference_in_another_thread_is_not_seen_by_the_hooks():
    # A server answers /predict (no hooks, no lock) while it computes /features for another request.
    torch.manual_seed(0)
    model = create_model("tutorial").eval()
    x, other = torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 32)
    want = [(n, m.clone()) for n, m in feature_maps(model, x)]
    stop, errors = threading.Event(), []

    def infer() -> None:
        with torch.no_grad():
            while not stop.is_set():
                model(other)

    thread = threading.Thread(target=infer)
    thread.start()
    try:
        for _ in range(40):
            maps = feature_maps(model, x)
            if [n for n, _ in maps] != [n for n, _ in want] or any(not torch.equal(a, b) for (_, a), (_, b) in zip(maps, want, strict=True)):
                errors.append("a plain forward pass of another thread was recorded")
    finally:
        stop.set()
        thread.join()
    assert not errors, errors[:1]


def test_hooks_are_removed_when_the_pass_fails():
    model = create_model("tutorial").eval()
    with pytest.raises(RuntimeError):
        feature_maps(model, torch.randn(1, 1, 32, 32))  # wrong channel count: the pass raises
    assert no_hooks_left(model)


def test_hooks_only_go_on_the_models_own_modules():
    model, other = create_model("tutorial"), create_model("tutorial")
    with pytest.raises(ValueError), hooked(model, [(next(other.modules()), lambda *a: None)]):
        pass
