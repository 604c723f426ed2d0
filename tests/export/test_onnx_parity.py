"""ONNX parity: onnxruntime running an exported model gives PyTorch's logits (fp32, eval mode)
on 1,000 real CIFAR-10 images, for every registered model family, with and without TTA."""
import pytest

pytest.importorskip("onnxruntime")

import torch  # noqa: E402

import convnet  # noqa: E402
from convnet.export.onnx import export_onnx  # noqa: E402
from convnet.inference.loading import load_classifier  # noqa: E402
from convnet.inference.model_file import load_checkpoint  # noqa: E402
from convnet.inference.onnx_model import OnnxClassifier  # noqa: E402
from convnet.training.config import TrainConfig  # noqa: E402
from convnet.training.train import train  # noqa: E402
from tests.helpers import LIGHT_ARGS, write_colour_folder  # noqa: E402

TOLERANCE = 1e-4  # max abs difference of fp32 logits, the bound
# Four families trained for an epoch each, then 1,000 images through both runtimes: seconds per family.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_images() -> torch.Tensor:
    """The first 1,000 images of the embedded CIFAR-10 sample: uint8 (1000, 3, 32, 32)."""
    return convnet.load_dataset("sample", "train").images[:1000]


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    return write_colour_folder(tmp_path_factory.mktemp("colours"), per_class=32, size=32)


@pytest.fixture(scope="module", params=sorted(convnet.list_models()))
def exported(request, colours, tmp_path_factory):
    """(torch Classifier, OnnxClassifier) of one family trained for one epoch, so that airnet's
    whitening is initialised from data and BatchNorm's running statistics are not the defaults;
    "standard" normalisation puts a real per-channel mean and std inside the graph."""
    name = request.param
    runs = tmp_path_factory.mktemp("runs")
    config = TrainConfig(
        data=str(colours), model=name, model_args=LIGHT_ARGS.get(name, {}), epochs=1, batch_size=32, val_split=0.25,
        normalize="standard", precision="fp32", runs_dir=str(runs), name=name,
    )
    model_file = train(config, progress=False).run_dir / "model.safetensors"
    clf = load_checkpoint(model_file)
    onnx_clf = load_classifier(export_onnx(clf, model_file.with_suffix(".onnx")))
    assert isinstance(onnx_clf, OnnxClassifier) and onnx_clf.info == clf.info
    return clf, onnx_clf


def test_onnxruntime_gives_pytorchs_logits_on_real_images(exported, real_images):
    clf, onnx_clf = exported
    want, got = clf.logits(real_images), onnx_clf.logits(real_images)
    assert got.shape == want.shape == (1000, 3) and got.dtype == torch.float32
    diff = (got - want).abs().max().item()
    print(f"{clf.info.model}: max abs difference {diff:.3g} over {len(real_images)} images")  # shown with -s
    assert diff <= TOLERANCE
    assert torch.equal(got.argmax(1), want.argmax(1))
    assert want.std() > 0.01  # a model whose outputs barely vary would make the comparison empty


def test_tta_views_cut_from_uint8_pixels_give_the_same_logits(exported, real_images):
    # Level 2 uses every view (flips and both reflect-shifts); the ONNX path cuts them before the
    # graph normalises, PyTorch's after.
    clf, onnx_clf = exported
    images = real_images[:200]
    got, want = onnx_clf.logits(images, tta=2), clf.logits(images, tta=2)
    assert (got - want).abs().max().item() <= TOLERANCE
    assert not torch.allclose(got, onnx_clf.logits(images), atol=TOLERANCE)  # TTA did change something


def test_the_batch_dimension_is_dynamic(exported, real_images):
    _, onnx_clf = exported
    whole = onnx_clf.logits(real_images, batch_size=1000)
    one_by_one = onnx_clf.logits(real_images[:20], batch_size=1)
    assert torch.allclose(one_by_one, whole[:20], atol=1e-5, rtol=0)
