"""Grad-CAM against a float64 autograd reference, on a model trained to find a square's side."""
import copy
import io

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from matplotlib import colormaps
from PIL import Image

from convnet.cli import main
from convnet.errors import ConvnetError, DataError
from convnet.inference.model_file import (
    Classifier,
    ModelInfo,
    load_checkpoint,
    normalize,
    save_model,
)
from convnet.models import create_model, list_models
from convnet.viz.cam import cam_figure, cam_overlay, grad_cam, write_cam
from convnet.viz.grid import FIGURE_DPI
from tests.helpers import LIGHT_ARGS


def grad_cam_of(clf: Classifier, image, class_name=None):
    return grad_cam(clf.model, clf.model_input(image), clf.classes, class_name)


def write_cam_of(clf: Classifier, image, out_dir, class_name=None):
    pixels = clf.to_input(image)
    return write_cam(clf.model, pixels, clf.model_input(pixels), clf.classes, out_dir, class_name)
CLASSES = ("left", "right", "none")
SIZE = (32, 32)


def squares(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Dim noise with a bright 8x8 square in the left half (label 0), the right half (1), or none (2).

    The 'none' class keeps the model from reading "right" as "not left": each side needs
    its own detector, which is what Grad-CAM should then point at.
    """
    labels = torch.randint(0, 3, (n,), generator=gen)
    images = (torch.rand(n, 3, *SIZE, generator=gen) * 60).to(torch.uint8)
    for i, label in enumerate(labels.tolist()):
        if label < 2:
            top = int(torch.randint(4, 20, (1,), generator=gen))
            left = int(torch.randint(2, 8, (1,), generator=gen)) + 16 * label
            images[i, :, top : top + 8, left : left + 8] = 230
    return images, labels


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tutorial CNN trained 40 steps on `squares`, saved; with held-out images."""
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    info = ModelInfo("tutorial", {}, CLASSES, 3, SIZE, (0.5,) * 3, (0.25,) * 3)
    model = create_model("tutorial", num_classes=3, in_chans=3, input_size=SIZE)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # batches this small train faster on one thread than on contended ones
    try:
        for _ in range(40):
            images, labels = squares(64, gen)
            loss = F.cross_entropy(model(normalize(images, info.mean, info.std)), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    path = tmp_path_factory.mktemp("cam") / "model.safetensors"
    save_model(path, model, info)
    return path, squares(48, gen)


def in_float64(model: nn.Module, split: int | None = None):
    """(features, head) of a float64 copy: `model.layers` cut at `split`, or else the registry
    contract's forward_features / forward_head."""
    model = copy.deepcopy(model).double()
    return ((model.forward_features, model.forward_head) if split is None
            else (model.layers[:split], model.layers[split:]))


def reference_grad_cam(parts, image: torch.Tensor, info: ModelInfo, class_index: int | None):
    """Grad-CAM in float64 with A = features(x); returns (heatmap, class index, probability).

    The heatmap is divided by its maximum, and stays all zero where nothing speaks for the class.
    """
    features, head = parts
    x = normalize(image[None], info.mean, info.std).double()
    a = features(x).detach().requires_grad_(True)  # (1, K, h, w)
    assert a.ndim == 4 and a.shape[2] * a.shape[3] > 1, "the reference needs a spatial map"
    logits = head(a)[0]
    c = int(logits.argmax()) if class_index is None else class_index
    (grad,) = torch.autograd.grad(logits[c], a)
    weights = grad.mean(dim=(2, 3))[0]  # (K,)
    cam = torch.relu((weights[:, None, None] * a.detach()[0]).sum(0))
    cam = F.interpolate(cam[None, None], size=tuple(info.input_size), mode="bilinear", align_corners=False)[0, 0]
    top = cam.max()
    return cam / top if top > 0 else cam, c, float(torch.softmax(logits.detach(), 0)[c])


def test_model_learned_the_task(trained):
    path, (images, labels) = trained
    assert (load_checkpoint(path).logits(images).argmax(1) == labels).float().mean() >= 0.95


@pytest.mark.parametrize("class_name", [None, "left", "right", "none"])
def test_matches_float64_reference(trained, class_name):
    path, (images, labels) = trained
    clf = load_checkpoint(path)
    two_of_each = [i for label in range(3) for i in torch.nonzero(labels == label)[:2, 0].tolist()]
    with_evidence = 0
    for image in images[two_of_each]:
        # The tutorial's last spatial map is forward_features' output: the ReLU after conv 3, 64x4x4.
        want, c, p = reference_grad_cam(in_float64(clf.model), image, clf.info,
                                        None if class_name is None else CLASSES.index(class_name))
        cam = grad_cam_of(clf, image, class_name)
        assert cam.class_name == CLASSES[c]
        assert cam.probability == pytest.approx(p, abs=1e-5)
        assert cam.heatmap.shape == SIZE and cam.heatmap.dtype == torch.float32
        torch.testing.assert_close(cam.heatmap.double(), want, rtol=0, atol=1e-4)
        with_evidence += bool(want.max() == 1)
    assert with_evidence >= 2, "every heatmap compared was all zero"


def test_target_is_the_last_map_before_global_pooling(tmp_path):
    # conv, relu, maxpool, conv, batchnorm, relu, [global pool], flatten, linear: the map is layers[:6].
    torch.manual_seed(1)
    model = create_model("spec", num_classes=4, in_chans=1, input_size=(16, 16), arch="c8-p-c16-b-g")
    assert isinstance(model.layers[6], nn.AdaptiveAvgPool2d)
    model.layers[4].running_mean.uniform_(-0.5, 0.5)  # non-trivial batch norm statistics
    model.layers[4].running_var.uniform_(0.5, 2.0)
    info = ModelInfo("spec", {"arch": "c8-p-c16-b-g"}, ("a", "b", "c", "d"), 1, (16, 16), (0.5,), (0.25,))
    save_model(tmp_path / "m.safetensors", model, info)
    clf = load_checkpoint(tmp_path / "m.safetensors")
    image = torch.randint(0, 256, (1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    for c in range(4):
        want, _, p = reference_grad_cam(in_float64(clf.model, split=6), image, info, c)
        cam = grad_cam_of(clf, image, info.classes[c])
        torch.testing.assert_close(cam.heatmap.double(), want, rtol=0, atol=1e-4)
        assert cam.probability == pytest.approx(p, abs=1e-5)


# Every registered model, small enough to run in a moment (a model registered later runs with its defaults).
EVERY_MODEL = [pytest.param(name, LIGHT_ARGS.get(name, {}), id=name) for name in list_models()]
EVERY_MODEL.append(pytest.param("resnet", {"depth": 9, "width": 4}, id="resnet9"))


@pytest.mark.parametrize("name, model_args", EVERY_MODEL)
def test_every_registered_model_matches_the_reference_on_its_feature_map(name, model_args):
    # For every registered family the last spatial map is forward_features' output.
    torch.manual_seed(0)
    info = ModelInfo(name, model_args, ("a", "b", "c"), 3, SIZE, (0.5,) * 3, (0.25,) * 3)
    clf = Classifier(create_model(name, num_classes=3, in_chans=3, input_size=SIZE, **model_args), info)
    image = torch.randint(0, 256, (3, *SIZE), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    for class_name in (None, "b"):
        want, c, p = reference_grad_cam(in_float64(clf.model), image, info, None if class_name is None else 1)
        cam = grad_cam_of(clf, image, class_name)
        assert cam.class_name == info.classes[c] and cam.probability == pytest.approx(p, abs=1e-5)
        torch.testing.assert_close(cam.heatmap.double(), want, rtol=0, atol=1e-4)


def test_heatmap_lies_on_the_side_of_the_square(trained):
    path, (images, labels) = trained
    clf = load_checkpoint(path)
    fractions = []
    for image, label in zip(images, labels.tolist(), strict=True):
        if label == 2:
            continue
        heat = grad_cam_of(clf, image, CLASSES[label]).heatmap
        left = float(heat[:, :16].sum() / heat.sum())
        fractions.append(left if label == 0 else 1 - left)
    assert min(fractions) > 0.5, "some heatmap has most of its mass on the side without the square"
    assert np.mean(fractions) > 0.65


def test_unknown_class_lists_the_known_ones(trained):
    path, (images, _) = trained
    with pytest.raises(ConvnetError, match="left, right, none"):
        grad_cam_of(load_checkpoint(path), images[0], "cat")


def test_overlay_blends_jet_over_the_image():
    grey = torch.full((1, 32, 32), 100, dtype=torch.uint8)
    heat = torch.zeros(SIZE)
    heat[:, 16:] = 1.0
    img = np.asarray(cam_overlay(grey, heat))
    assert img.shape == (256, 256, 3)  # upscaled 8 times
    # matplotlib's jet is (0, 0, 0.5) at 0 and (0.5, 0, 0) at 1; half image, half colour.
    assert (img[:, :128] == (50, 50, 114)).all()
    assert (img[:, 128:] == (114, 50, 50)).all()


def read_png(path) -> np.ndarray:
    with Image.open(path) as img:
        assert img.format == "PNG"
        return np.asarray(img.convert("RGB"))


def save_png(image: torch.Tensor, path):
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)
    return path


def first_of(labels: torch.Tensor, label: int) -> int:
    return int(torch.nonzero(labels == label)[0])


def test_write_cam_writes_a_png_that_depends_on_the_image(trained, tmp_path):
    path, (images, labels) = trained
    clf = load_checkpoint(path)
    left = save_png(images[first_of(labels, 0)], tmp_path / "left.png")
    right = save_png(images[first_of(labels, 1)], tmp_path / "right.png")
    a = write_cam_of(clf, left, tmp_path / "a", "left")
    b = write_cam_of(clf, right, tmp_path / "b", "left")
    assert a == tmp_path / "a" / "cam_left.png" and b == tmp_path / "b" / "cam_left.png"
    pixels_a, pixels_b = read_png(a), read_png(b)
    assert pixels_a.shape == pixels_b.shape and pixels_a.shape[1] > 2 * 256
    assert not np.array_equal(pixels_a, pixels_b)
    assert write_cam_of(clf, right, tmp_path / "c").name == "cam_right.png"  # the prediction by default


def test_unreadable_image_is_a_data_error(trained, tmp_path):
    path, _ = trained
    (tmp_path / "x.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(DataError, match="x.jpg"):
        write_cam_of(load_checkpoint(path), tmp_path / "x.jpg", tmp_path / "out")


def test_cli_end_to_end(trained, tmp_path, capsys, monkeypatch):
    path, (images, labels) = trained
    image = save_png(images[first_of(labels, 1)], tmp_path / "in.png")
    monkeypatch.chdir(tmp_path)

    assert main(["cam", str(path), str(image)]) == 0  # the default --out: cam/<image name>/ beside the model
    written = path.parent / "cam" / "in" / "cam_right.png"
    assert capsys.readouterr().out.strip() == str(written)
    assert read_png(written).size > 0

    assert main(["cam", str(path), str(image), "--class", "none", "--out", "elsewhere"]) == 0
    assert (tmp_path / "elsewhere" / "cam_none.png").is_file()

    assert main(["cam", str(path), str(image), "--class", "cat"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "left, right, none" in err and err.count("\n") == 1

    assert main(["cam", str(path), str(tmp_path / "nothing.png")]) == 2
    assert "nothing.png" in capsys.readouterr().err


def pixel_centres(png: np.ndarray, ax, rows: int, cols: int) -> np.ndarray:
    """The PNG's colours at the centres of an axes' rows x cols image pixels, as float (rows, cols, 3)."""
    box = ax.get_window_extent()  # display pixels, origin at the bottom left
    xs = (box.x0 + (np.arange(cols) + 0.5) * box.width / cols).astype(int)
    ys = (png.shape[0] - (box.y1 - (np.arange(rows) + 0.5) * box.height / rows)).astype(int)
    return png[ys[:, None], xs[None, :]].astype(np.float64)


def test_the_png_shows_the_float64_heatmap_beside_the_input_with_a_colour_bar_and_a_caption(trained, tmp_path):
    path, (images, labels) = trained
    clf = load_checkpoint(path)
    image = images[first_of(labels, 0)]
    want, c, p = reference_grad_cam(in_float64(clf.model), image, clf.info, CLASSES.index("left"))
    assert want.max() == 1, "no evidence for the class: the probe below would compare blue with blue"
    png = read_png(write_cam_of(clf, image, tmp_path, "left"))

    # The figure written, drawn again to learn where its axes lie in the PNG.
    fig = cam_figure(clf.to_input(image), grad_cam_of(clf, image, "left"))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=FIGURE_DPI)
    np.testing.assert_array_equal(read_png(buf), png)
    ax_input, ax_cam, ax_bar = fig.axes

    rgb = image.permute(1, 2, 0).double().numpy()
    np.testing.assert_allclose(pixel_centres(png, ax_input, *SIZE), rgb, atol=1)
    # Undo the 50% blend, then read each pixel's heat off matplotlib's jet.
    colour = (pixel_centres(png, ax_cam, *SIZE) - 0.5 * rgb) / (0.5 * 255)
    jet = colormaps["jet"](np.linspace(0, 1, 1001))[:, :3]
    heat = np.linspace(0, 1, 1001)[np.abs(colour[:, :, None] - jet[None, None]).sum(-1).argmin(-1)]
    np.testing.assert_allclose(heat, want.numpy(), atol=0.02)

    # The colour bar: jet from 0 (dark blue, bottom) to 1 (dark red, top), saying what it measures.
    bar = pixel_centres(png, ax_bar, 100, 1)[:, 0]
    np.testing.assert_allclose(bar[0], (128, 0, 0), atol=8)
    np.testing.assert_allclose(bar[-1], (0, 0, 128), atol=8)
    assert ax_bar.get_ylim() == (0, 1) and ax_bar.get_ylabel().startswith("relative importance for left (0: none, 1: ")
    # The caption: class, probability, the layer explained and its map's shape.
    title = fig.texts[0].get_text()
    assert isinstance(clf.model.layers[7], nn.ReLU)  # the tutorial's last spatial map: the ReLU after conv 3
    assert title == f"Grad-CAM for left (probability {p:.1%}), from layer layers.7 (ReLU): 64 x 4 x 4"
    assert fig.texts[0].get_fontsize() >= 12
