"""Whole networks: finite differences, torch's SequentialNet step for step, model files, training."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from convnet.errors import CheckpointError, DataError
from convnet.formats import ModelInfo
from convnet.inference.model_file import load_checkpoint, save_model
from convnet.models import create_model
from convnet.scratch.losses import CrossEntropyLoss
from convnet.scratch.network import (
    build_network,
    load_model_file,
    predict,
    predict_logits,
)
from convnet.scratch.optim import Adam
from convnet.scratch.train import evaluate, train_epoch
from convnet.spec import TUTORIAL_SPEC

# Batch norm (2-D and 1-D), strided and padded convolutions, both poolings, global pooling.
SPECS = ["c4k3p1-b-p-c6k3s2-a2s1-f-d7-b", "c3k2s2p1-p3s1-c5-g-f-d6"]


def info_for(model: str, model_args: dict, classes: int = 10, in_chans: int = 3, size=(32, 32)) -> ModelInfo:
    return ModelInfo(model, model_args, tuple(f"class{i}" for i in range(classes)), in_chans, size,
                     (0.49, 0.48, 0.45)[:in_chans], (0.25, 0.24, 0.26)[:in_chans])


@pytest.mark.parametrize("spec", SPECS)
def test_gradients_match_finite_differences(spec):
    rng = np.random.default_rng(0)
    net = build_network(spec, 3, 2, (12, 12), rng=rng)
    x, y = rng.standard_normal((4, 2, 12, 12)), rng.integers(0, 3, 4)
    criterion = CrossEntropyLoss()

    def loss() -> float:
        return criterion(net.forward(x), y)

    loss()
    dx = net.backward(criterion.backward())
    eps = 1e-6
    # A sample of coordinates of the input and of every parameter, by central differences.
    for array, grad in [(x, dx)] + [(p.data, p.grad) for p in net.parameters()]:
        for idx in map(tuple, rng.integers(0, array.shape, size=(6, array.ndim))):
            saved = array[idx]
            array[idx] = saved + eps
            up = loss()
            array[idx] = saved - eps
            down = loss()
            array[idx] = saved
            assert (up - down) / (2 * eps) == pytest.approx(grad[idx], rel=1e-5, abs=1e-8)


@pytest.mark.parametrize("spec", SPECS)
def test_training_step_matches_torch(spec):
    """Forward, backward and one Adam step of the whole network, in train mode, against torch."""
    rng = np.random.default_rng(1)
    net = build_network(spec, 3, 2, (12, 12), rng=rng)
    for p in net.parameters():
        p.data = rng.standard_normal(p.shape) * 0.5
    model = create_model("spec", num_classes=3, in_chans=2, input_size=(12, 12), arch=spec).double().train()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in net.state_dict().items()})
    x, y = rng.standard_normal((5, 2, 12, 12)), rng.integers(0, 3, 5)

    criterion, opt = CrossEntropyLoss(), Adam(net.parameters(), 1e-2)
    logits = net.forward(x)
    criterion(logits, y)
    net.backward(criterion.backward())
    opt.step()
    opt_t = torch.optim.Adam(model.parameters(), 1e-2)
    logits_t = model(torch.from_numpy(x))
    torch.nn.functional.cross_entropy(logits_t, torch.from_numpy(y)).backward()
    opt_t.step()

    np.testing.assert_allclose(logits, logits_t.detach().numpy(), rtol=1e-10, atol=1e-12)
    grads_t = {k: p.grad.numpy() for k, p in model.named_parameters()}
    for name, p in net.named_parameters():
        np.testing.assert_allclose(p.grad, grads_t[name], rtol=1e-10, atol=1e-12)
    # Weights after the step, running statistics too. Adam's first step, lr * g / (|g| + eps),
    # moves by up to lr / eps times a change in g: where a gradient is rounding noise (a bias
    # just before a batch norm has a true gradient of 0), the gradients' tiny difference shows.
    grads = dict(net.named_parameters())
    for name, value in model.state_dict().items():
        slack = 1e-2 / 1e-8 * np.abs(grads[name].grad - grads_t[name]) if name in grads_t else 0.0
        assert np.all(np.abs(net.state_dict()[name] - value.numpy())
                      <= 1e-12 + 1e-10 * np.abs(value.numpy()) + slack), name


@pytest.fixture(scope="module")
def tutorial_file(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("tutorial")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):  # the builder zeroes biases; random ones test their loading
                p.uniform_(-0.3, 0.3)
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    save_model(path, model, info_for("tutorial", {}))
    return path


def test_tutorial_file_gives_torchs_logits_in_float32(tutorial_file):
    net, info = load_model_file(tutorial_file, dtype=np.float32)
    assert info["model"] == "tutorial" and len(info["classes"]) == 10
    images = np.random.default_rng(2).integers(0, 256, (200, 3, 32, 32), dtype=np.uint8)
    expected = load_checkpoint(tutorial_file).logits(torch.from_numpy(images)).numpy()
    logits = predict_logits(net, info, images)
    assert logits.dtype == np.float32
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    assert np.array_equal(logits.argmax(1), expected.argmax(1))
    probs = predict(net, info, images[:5])
    np.testing.assert_allclose(probs, torch.softmax(torch.from_numpy(expected[:5]), 1).numpy(), rtol=1e-4, atol=1e-6)


def test_spec_file_with_batchnorm_in_eval_mode_matches_torch(tmp_path):
    spec = SPECS[0]
    torch.manual_seed(3)
    model = create_model("spec", num_classes=4, in_chans=1, input_size=(12, 12), arch=spec)
    with torch.no_grad():  # running statistics far from their (0, 1) start
        for name, buf in model.named_buffers():
            if "running" in name:
                buf.uniform_(0.5, 2.0)
    path = tmp_path / "run"
    save_model(path / "model.safetensors", model,
               info_for("spec", {"arch": spec}, classes=4, in_chans=1, size=(12, 12)))
    net, info = load_model_file(path)  # a run folder works as in checkpoint.read_model_file
    images = np.random.default_rng(4).integers(0, 256, (20, 1, 12, 12), dtype=np.uint8)
    classifier = load_checkpoint(path)
    classifier.model.double()
    x = (torch.from_numpy(images).double() / 255 - 0.49) / 0.25
    with torch.no_grad():
        expected = classifier.model(x).numpy()
    np.testing.assert_allclose(predict_logits(net, info, images), expected, rtol=1e-10, atol=1e-12)


def test_unusable_files_raise_checkpoint_errors(tmp_path, tutorial_file):
    with pytest.raises(CheckpointError, match="No model file"):
        load_model_file(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_model_file(tmp_path / "junk.safetensors")
    save_file({"w": np.zeros(2, np.float32)}, tmp_path / "plain.safetensors")
    with pytest.raises(CheckpointError, match="not a convnet model"):
        load_model_file(tmp_path / "plain.safetensors")
    save_model(tmp_path / "other.safetensors", create_model("tutorial"), info_for("resnet18", {}))
    with pytest.raises(CheckpointError, match="'resnet18' model"):
        load_model_file(tmp_path / "other.safetensors")
    save_model(tmp_path / "wrong.safetensors", create_model("tutorial", num_classes=5), info_for("tutorial", {}))
    with pytest.raises(CheckpointError, match="does not match"):
        load_model_file(tmp_path / "wrong.safetensors")
    net, info = load_model_file(tutorial_file)
    with pytest.raises(DataError, match="uint8"):
        predict(net, info, np.zeros((1, 3, 32, 32), np.float32))


def test_scratch_reads_model_files_without_importing_torch(tutorial_file):
    code = (
        "import sys, numpy as np\n"
        "import convnet.scratch, convnet.scratch.layers, convnet.scratch.losses, convnet.scratch.optim\n"
        "import convnet.scratch.network as N, convnet.scratch.train, convnet.scratch.explain as E\n"
        f"net, info = N.load_model_file({str(tutorial_file)!r})\n"
        "N.predict(net, info, np.zeros((2, 3, 32, 32), np.uint8))\n"
        "E.render_text(E.worked_example())\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out.strip().replace("'", '"')) == []


def test_training_lowers_the_loss_on_a_fixed_batch():
    rng = np.random.default_rng(5)
    net = build_network("c8-p-c8-f-d16", 4, 3, (10, 10), dtype=np.float32, rng=rng)
    x, y = rng.standard_normal((24, 3, 10, 10)).astype(np.float32), np.arange(24) % 4
    opt = Adam(net.parameters(), 1e-2)
    before, _ = evaluate(net, x, y, batch_size=10)
    seen = []
    for _ in range(15):
        train_epoch(net, opt, x, y, batch_size=8, rng=rng, on_batch=lambda n, loss, acc: seen.append(n))
    after, accuracy = evaluate(net, x, y, batch_size=10)
    assert seen[:3] == [8, 8, 8] and sum(seen) == 15 * 24
    assert after < 0.3 * before and accuracy > 0.9
    assert all(p.data.dtype == np.float32 for p in net.parameters())


def test_train_epoch_reports_the_mean_of_its_batches():
    rng = np.random.default_rng(6)
    net = build_network("c2-f", 3, 1, (5, 5), rng=rng)
    x, y = rng.standard_normal((10, 1, 5, 5)), rng.integers(0, 3, 10)
    batches = []
    loss, accuracy = train_epoch(net, Adam(net.parameters(), 0.0), x, y, 4, rng,
                                 on_batch=lambda n, batch_loss, a: batches.append((n, batch_loss, a)))
    counts = np.array([b[0] for b in batches])
    assert counts.tolist() == [4, 4, 2]
    assert loss == pytest.approx(np.dot(counts, [b[1] for b in batches]) / 10)
    assert accuracy == pytest.approx(np.dot(counts, [b[2] for b in batches]) / 10)
    # With lr 0 the weights did not move: the epoch's loss is the evaluation's.
    assert loss == pytest.approx(evaluate(net, x, y, 3)[0])


@pytest.mark.slow
def test_one_epoch_on_real_cifar_images_learns():
    """The acceptance run: the tutorial CNN, 1,800 sample CIFAR-10 images, one epoch, batch 32, Adam 1e-3."""
    from pathlib import Path

    import convnet.data
    from convnet.data.images import load_image
    from convnet.scratch.network import normalize

    root = Path(convnet.data.__file__).parent / "sample" / "cifar10"
    classes = sorted(d.name for d in (root / "train").iterdir())

    def load(split: str) -> tuple[np.ndarray, np.ndarray]:
        files = [(f, i) for i, c in enumerate(classes) for f in sorted((root / split / c).glob("*.jpg"))]
        return np.stack([load_image(f, (32, 32), 3).numpy() for f, _ in files]), np.array([i for _, i in files])

    (x, y), (xv, yv) = load("train"), load("test")
    rng = np.random.default_rng(0)
    keep = rng.permutation(len(x))[:1800]
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    net = build_network(TUTORIAL_SPEC, 10, 3, (32, 32), dtype=np.float32, rng=rng)
    train_epoch(net, Adam(net.parameters(), 1e-3), normalize(x[keep], mean, std), y[keep], 32, rng)
    _, accuracy = evaluate(net, normalize(xv, mean, std), yv, 250)
    assert accuracy > 0.2  # chance is 0.1
