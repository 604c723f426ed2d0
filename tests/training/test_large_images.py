"""Photos at full size: a folder of 224x224 and 300x200 JPEG files trains with `--recipe fast
--image-size 224` and `--model resnet`, then evaluates, predicts and explains, all through
`convnet.cli.main` as a user would, with no silent mis-shape on the way: the model file says
224x224, every file gets a prediction, the feature maps have the sizes conv arithmetic gives
for a 224x224 input, and the Grad-CAM heat map is 224x224."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from convnet.cli import main
from convnet.inference.model_file import load_checkpoint
from convnet.models import create_model, list_models
from convnet.viz.cam import grad_cam
from convnet.viz.features import conv_layers, feature_maps
from tests.helpers import LIGHT_ARGS

CLASSES = ("circle", "square", "triangle")
PER_CLASS = 12
SIDE = 224


def draw_shape(kind: str, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A photo-like picture: a noisy background of one colour and one filled shape of another.

    Args:
        size: (width, height), as Pillow counts.
    """
    w, h = size
    background = rng.integers(0, 256, 3)
    pixels = np.clip(background + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(pixels)
    r = int(rng.integers(40, 70))  # the shape stays inside the centred 200x200 that ImageOps.fit keeps
    cx, cy = w // 2 + int(rng.integers(-20, 21)), h // 2 + int(rng.integers(-20, 21))
    colour = tuple(int(c) for c in (background + 128) % 256)
    draw = ImageDraw.Draw(img)
    if kind == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif kind == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=colour)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    return img


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """ROOT/<circle|square|triangle>/NN.jpg: 12 JPEG files a class, every third 300 wide by 200 high, the rest
    224x224."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for kind in CLASSES:
        (root / kind).mkdir()
        for i in range(PER_CLASS):
            size = (300, 200) if i % 3 == 0 else (SIDE, SIDE)
            draw_shape(kind, size, rng).save(root / kind / f"{i:02d}.jpg", quality=90)
    return root


@pytest.fixture(scope="module")
def fast_run(photos, tmp_path_factory) -> Path:
    """The `fast` recipe (airnet, Muon) trained 2 epochs on the photos at 224x224."""
    runs = tmp_path_factory.mktemp("runs")
    argv = ["train", "--recipe", "fast", "--image-size", str(SIDE), "--epochs", "2", "--batch-size", "12",
            "--data", str(photos), "--runs-dir", str(runs), "--name", "fast", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    return runs / "fast"


def wide_photo(photos: Path) -> Path:
    path = photos / "circle" / "00.jpg"
    assert Image.open(path).size == (300, 200)
    return path


@pytest.mark.slow
def test_the_fast_recipe_trains_at_224_and_says_so(fast_run):
    info = load_checkpoint(fast_run).info
    assert (info.model, info.input_size, info.in_chans, info.classes) == ("airnet", (SIDE, SIDE), 3, CLASSES)
    config = json.loads((fast_run / "config.json").read_text())
    assert config["recipe"] == "fast" and config["image_size"] == [SIDE, SIDE]
    history = (fast_run / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 2  # header and two epochs
    assert all(math.isfinite(float(v)) for line in history[1:] for v in line.split(","))


@pytest.mark.slow
def test_evaluate_scores_every_photo(fast_run, photos, capsys):
    capsys.readouterr()
    assert main(["evaluate", str(fast_run), "--data", str(photos), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == len(CLASSES) * PER_CLASS  # the folder has no test split: all of it is scored
    assert np.array(report["confusion_matrix"]).shape == (3, 3) and np.sum(report["confusion_matrix"]) == report["n"]


@pytest.mark.slow
def test_predict_answers_for_every_file_with_every_class(fast_run, photos, capsys):
    capsys.readouterr()
    assert main(["predict", str(fast_run), str(photos), "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(Path(r["path"]).relative_to(photos).as_posix() for r in lines) == sorted(
        f"{c}/{i:02d}.jpg" for c in CLASSES for i in range(PER_CLASS)
    )
    for r in lines:
        assert sorted(p["class"] for p in r["predictions"]) == list(CLASSES)  # top 3 of 3 classes
        assert sum(p["probability"] for p in r["predictions"]) == pytest.approx(1.0, abs=1e-5)


def airnet_map_shapes(side: int) -> list[tuple[int, int, int]]:
    """airnet's conv outputs for a side x side input, by conv arithmetic: the 2x2 whitening conv
    (valid, 2 * 3 * 2 * 2 = 24 channels) takes a pixel off, then each group of widths 64, 256,
    256 runs conv1 at its input's size and conv2 after a 2x2 pool."""
    side -= 1
    shapes = [(24, side, side)]
    for width in (64, 256, 256):
        shapes.append((width, side, side))
        side //= 2
        shapes.append((width, side, side))
    return shapes


@pytest.mark.slow
def test_features_writes_a_map_per_conv_layer_at_the_224_sizes(fast_run, photos, tmp_path, capsys):
    capsys.readouterr()
    out = tmp_path / "features"
    assert main(["features", str(fast_run), str(wide_photo(photos)), "--out", str(out)]) == 0
    written = [Path(line) for line in capsys.readouterr().out.splitlines()]
    clf = load_checkpoint(fast_run)
    names = [name for name, _ in conv_layers(clf.model)]
    assert written == [out / f"features_{name}.png" for name in names] + [out / "filters.png"]

    maps = feature_maps(clf.model, clf.model_input(wide_photo(photos)))
    expected = airnet_map_shapes(SIDE)
    assert [tuple(m.shape) for _, m in maps] == expected
    for path, (channels, side, _) in zip(written, expected, strict=False):
        # A near-square grid of every channel's map, none of them shrunk.
        assert Image.open(path).width >= math.ceil(math.sqrt(channels)) * side


@pytest.mark.slow
def test_cam_explains_a_resized_photo_at_224(fast_run, photos, tmp_path, capsys):
    capsys.readouterr()
    out = tmp_path / "cam"
    assert main(["cam", str(fast_run), str(wide_photo(photos)), "--out", str(out)]) == 0
    (path,) = (Path(line) for line in capsys.readouterr().out.splitlines())
    assert path.parent == out and path.name.removeprefix("cam_").removesuffix(".png") in CLASSES
    with Image.open(path) as figure:  # the input and its overlay side by side, each 224x224 or larger
        assert figure.width >= 2 * SIDE and figure.height >= SIDE

    clf = load_checkpoint(fast_run)
    cam = grad_cam(clf.model, clf.model_input(wide_photo(photos)), clf.classes)
    assert cam.heatmap.shape == (SIDE, SIDE) and 0.0 <= float(cam.heatmap.min()) <= float(cam.heatmap.max()) <= 1.0


def test_resnet_trains_and_predicts_at_224_through_its_imagenet_stem(photos, tmp_path, capsys):
    argv = ["train", "--model", "resnet", "--model-arg", "width=8", "--image-size", str(SIDE), "--epochs", "1",
            "--batch-size", "12", "--data", str(photos), "--runs-dir", str(tmp_path), "--name", "resnet",
            "--quiet"]  # fmt: skip
    assert main(argv) == 0
    clf = load_checkpoint(tmp_path / "resnet")
    assert clf.info.input_size == (SIDE, SIDE)
    # 224 -stem-> 56 -stages-> 7: the ImageNet ResNet's 32x reduction, not the CIFAR stem's 8x (28).
    assert clf.model.forward_features(clf.model_input(wide_photo(photos))).shape == (1, 64, 7, 7)
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "resnet"), str(wide_photo(photos)), "--top-k", "2", "--json"]) == 0
    (answer,) = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert len(answer["predictions"]) == 2


@pytest.mark.parametrize("name", list_models())
def test_every_model_explains_a_224_input(name):
    # Grad-CAM and feature maps find their layers in every architecture at photo size, not only at 32x32.
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, input_size=(SIDE, SIDE), **LIGHT_ARGS.get(name, {})).eval()
    x = torch.randn(1, 3, SIDE, SIDE)
    assert grad_cam(model, x, CLASSES).heatmap.shape == (SIDE, SIDE)
    assert len(feature_maps(model, x)) == len(conv_layers(model))
