"""Feature maps and filters against the model's layers run by hand in float64, and the files written."""
import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from matplotlib.collections import QuadMesh
from PIL import Image

from convnet.cli import main
from convnet.errors import ConfigError, DataError
from convnet.inference.model_file import (
    Classifier,
    ModelInfo,
    load_checkpoint,
    normalize,
    save_model,
)
from convnet.models import create_model, list_models
from convnet.spec import TUTORIAL_SPEC, plan
from convnet.viz.features import (
    conv_layers,
    feature_maps,
    feature_maps_figure,
    filters_figure,
    first_layer_filters,
    render_feature_maps,
    render_filters,
    write_features,
)
from tests.helpers import LIGHT_ARGS

# (registry name, its arguments, spec the shapes are planned from, channels, input size)
MODELS = {
    "tutorial": ("tutorial", {}, TUTORIAL_SPEC, 3, (32, 32)),
    # Strides, padding, batch norm, a 1x1 convolution and grey 28x28 input.
    "spec": ("spec", {"arch": "c8k5s2p2-b-c16-p-c6k1"}, "c8k5s2p2-b-c16-p-c6k1", 1, (28, 28)),
}


def saved_model(tmp_path, name, model_args, in_chans, size):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, in_chans=in_chans, input_size=size, **model_args)
    info = ModelInfo(name, model_args, ("a", "b", "c"), in_chans, size, (0.5,) * in_chans, (0.25,) * in_chans)
    path = tmp_path / "model.safetensors"
    save_model(path, model, info)
    return path


def write_png(path, in_chans, size, seed):
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels[:, :, 0] if in_chans == 1 else pixels).save(path)
    return path


@pytest.fixture(params=list(MODELS))
def case(request, tmp_path):
    name, model_args, spec, in_chans, size = MODELS[request.param]
    ckpt = saved_model(tmp_path, name, model_args, in_chans, size)
    images = [write_png(tmp_path / f"in{seed}.png", in_chans, size, seed) for seed in (1, 2)]
    return ckpt, images, plan(spec, 3, in_chans, size)


def test_feature_maps_equal_the_layers_run_by_hand(case):
    ckpt, images, planned = case
    clf = load_checkpoint(ckpt)
    maps = feature_maps(clf.model, clf.model_input(images[0]))

    reference = copy.deepcopy(clf.model).double()
    x = normalize(clf.to_input(images[0])[None], clf.info.mean, clf.info.std).double()
    expected = []
    for i, layer in enumerate(reference.layers):
        x = layer(x)
        if isinstance(layer, nn.Conv2d):
            expected.append((f"layers.{i}", x[0].detach()))

    assert [name for name, _ in maps] == [name for name, _ in expected]
    assert [tuple(m.shape) for _, m in maps] == [layer.out_shape for layer in planned.layers if layer.kind == "conv2d"]
    for (_, got), (_, want) in zip(maps, expected, strict=True):
        torch.testing.assert_close(got.double(), want, rtol=0, atol=1e-4)


def test_first_layer_filters_are_the_first_convolution_weights(case):
    ckpt, _, planned = case
    clf = load_checkpoint(ckpt)
    first = next(layer for layer in planned.layers if layer.kind == "conv2d").args
    filters = first_layer_filters(clf.model)
    assert filters.shape == (first["out_channels"], first["in_channels"], first["kernel"], first["kernel"])
    torch.testing.assert_close(filters, clf.model.layers[0].weight.detach(), rtol=0, atol=0)


# Every registered model, small enough to run in a moment (a model registered later runs with its defaults).


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_shows_all_its_convolutions(name, tmp_path):
    torch.manual_seed(0)
    model_args = LIGHT_ARGS.get(name, {})
    info = ModelInfo(name, model_args, ("a", "b"), 3, (32, 32), (0.5,) * 3, (0.25,) * 3)
    clf = Classifier(create_model(name, num_classes=2, in_chans=3, input_size=(32, 32), **model_args), info)
    image = write_png(tmp_path / "x.png", 3, (32, 32), 0)
    maps = feature_maps(clf.model, clf.model_input(image))

    convs = [m for m in clf.model.modules() if isinstance(m, nn.Conv2d)]
    assert len(maps) == len(convs) and [m.shape[0] for _, m in maps] == [c.out_channels for c in convs]
    # The first convolution reads the image itself in every family: redo it by hand in float64.
    first = convs[0]
    x = normalize(clf.to_input(image)[None], info.mean, info.std).double()
    bias = None if first.bias is None else first.bias.double()
    want = F.conv2d(x, first.weight.double(), bias, first.stride, first.padding)[0]
    torch.testing.assert_close(maps[0][1].double(), want, rtol=0, atol=1e-4)
    # write_features finds each map's layer by its name (drawing every family's figures would take long).
    assert sorted(name for name, _ in maps) == sorted(name for name, _ in conv_layers(clf.model))


def minmax_by_hand(a: np.ndarray) -> np.ndarray:
    return np.round((a - a.min()) / (a.max() - a.min()) * 255)


def test_each_feature_map_cell_is_its_channel_min_max_normalised_and_upscaled():
    activation = torch.randn(3, 5, 7, generator=torch.Generator().manual_seed(0)) * 10 - 3
    img = np.asarray(render_feature_maps(activation, scale=2, ncols=3))
    # Cells of 14 x 10 with the grid's 2-pixel padding.
    assert img.shape == (2 + 10 + 2, 2 + 3 * (14 + 2), 3)
    for k in range(3):
        cell = img[2:12, 2 + k * 16 : 16 + k * 16]
        expected = minmax_by_hand(activation[k].numpy().astype(np.float64)).repeat(2, 0).repeat(2, 1)
        np.testing.assert_allclose(cell[:, :, 0], expected, atol=1)
        assert (cell[:, :, 0] == cell[:, :, 2]).all()


def tiles(mosaic: np.ndarray, n: int, h: int, w: int, pad: int = 2) -> list[np.ndarray]:
    """The n (h, w) cells of a near-square grid with `pad` pixels around and between them."""
    ncols = math.ceil(math.sqrt(n))
    return [mosaic[pad + (k // ncols) * (h + pad):][:h, pad + (k % ncols) * (w + pad):][:, :w] for k in range(n)]


def test_a_layer_figure_shows_the_input_beside_its_maps_and_says_what_they_are(case, tmp_path):
    ckpt, images, planned = case
    clf = load_checkpoint(ckpt)
    pixels = clf.to_input(images[0])
    (name, activation), *_ = feature_maps(clf.model, clf.model_input(pixels))
    fig = feature_maps_figure(pixels, name, clf.model.layers[0], activation)
    ax_input, ax_maps, ax_bar = fig.axes

    c, h, w = next(layer for layer in planned.layers if layer.kind == "conv2d").out_shape
    title, explanation = (t.get_text() for t in fig.texts)
    assert title.startswith("layers.0 (Conv2d") and f"output {c} x {h} x {w} (C x H x W)" in title
    assert "bright" in explanation and "before batch norm and ReLU" in explanation
    # The input as the model sees it, grey images as three equal channels.
    shown = ax_input.images[0].get_array()
    np.testing.assert_array_equal(shown, np.broadcast_to(pixels.numpy(), (3, *pixels.shape[1:])).transpose(1, 2, 0))
    # Every tile is its channel of the first convolution redone in float64, min-max scaled by hand.
    x = normalize(pixels[None], clf.info.mean, clf.info.std).double()
    want = copy.deepcopy(clf.model.layers[0]).double()(x)[0].detach().numpy()
    for tile, channel in zip(tiles(np.asarray(ax_maps.images[0].get_array()), c, h, w), want, strict=True):
        np.testing.assert_allclose(tile[:, :, 0], minmax_by_hand(channel), atol=1)
    # The colour bar: grey from 0 to 1, labelled with how the tiles are scaled.
    assert ax_bar.get_ylabel() == "each tile scaled on its own: its lowest value 0, its highest 1"
    (bar,) = [c for c in ax_bar.collections if isinstance(c, QuadMesh)]  # the bar's colours
    assert bar.get_cmap().name == "gray" and bar.get_clim() == (0, 1)


@pytest.mark.parametrize("in_chans, seen", [(3, "as RGB"),
                                            (1, "in grey: each filter's mean weight over its 1 input channel")])
def test_the_filters_figure_says_what_it_shows(in_chans, seen):
    weights = torch.randn(8, in_chans, 3, 3, generator=torch.Generator().manual_seed(0))
    fig = filters_figure("layers.0", weights)
    title, explanation = (t.get_text() for t in fig.texts)
    assert title.startswith("layers.0: the first convolution's 3x3 filters\n") and seen in title
    assert "bright where its weights are high" in explanation
    ax, ax_bar = fig.axes
    assert ax.get_title() == "8 filters of 3 x 3" and "its lowest weight 0, its highest 1" in ax_bar.get_ylabel()
    for tile, weight in zip(tiles(np.asarray(ax.images[0].get_array()), 8, 3, 3), weights.double().numpy(),
                            strict=True):
        np.testing.assert_allclose(tile[:, :, :in_chans], minmax_by_hand(weight).transpose(1, 2, 0), atol=1)


def test_constant_channel_renders_black_not_nan():
    img = np.asarray(render_feature_maps(torch.full((1, 4, 4), 7.0), scale=1))
    assert (img[2:6, 2:6] == 0).all()


def test_rgb_filters_keep_colour_and_other_filters_show_their_channel_mean():
    rgb = torch.randn(2, 3, 3, 3, generator=torch.Generator().manual_seed(1))
    cell = np.asarray(render_filters(rgb, scale=1, ncols=2))[2:5, 7:10]  # the second filter: 2 + 3 + 2 pixels in
    np.testing.assert_allclose(cell, minmax_by_hand(rgb[1].numpy().astype(np.float64)).transpose(1, 2, 0), atol=1)

    two = torch.randn(2, 2, 3, 3, generator=torch.Generator().manual_seed(2))
    cell = np.asarray(render_filters(two, scale=1, ncols=2))[2:5, 2:5, 0]
    np.testing.assert_allclose(cell, minmax_by_hand(two[0].numpy().astype(np.float64).mean(0)), atol=1)


def read_png(path) -> np.ndarray:
    with Image.open(path) as img:
        assert img.format == "PNG"
        return np.asarray(img.convert("RGB"))


def test_write_features_writes_one_png_per_convolution_and_the_filters(case, tmp_path):
    ckpt, images, planned = case
    clf = load_checkpoint(ckpt)
    convs = [i for i, layer in enumerate(planned.layers) if layer.kind == "conv2d"]
    written = [write_features(clf.model, clf.to_input(image), clf.model_input(image), tmp_path / f"out{k}")
               for k, image in enumerate(images)]

    for paths, out in zip(written, ("out0", "out1"), strict=True):
        assert [p.name for p in paths] == [f"features_layers.{i}.png" for i in convs] + ["filters.png"]
        assert all(p.parent == tmp_path / out and p.stat().st_size > 0 for p in paths)
    first, second = ([read_png(p) for p in paths] for paths in written)
    for a, b in zip(first[:-1], second[:-1], strict=True):
        assert a.shape == b.shape and not np.array_equal(a, b), (
            "feature maps of two different images are the same picture")
    np.testing.assert_array_equal(first[-1], second[-1])  # the filters do not depend on the image
    assert len(np.unique(first[-1])) > 2


def test_unreadable_and_missing_images_are_data_errors(case, tmp_path):
    ckpt, _, _ = case
    clf = load_checkpoint(ckpt)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image at all")
    with pytest.raises(DataError, match="broken.png"):
        write_features(clf.model, clf.to_input(broken), clf.model_input(broken), tmp_path / "out")
    with pytest.raises(DataError, match="no image file"):
        feature_maps(clf.model, clf.model_input(tmp_path / "missing.png"))
    assert not (tmp_path / "out").exists()


def test_a_model_without_convolutions_says_so(tmp_path):
    clf = load_checkpoint(saved_model(tmp_path, "spec", {"arch": "d8"}, 1, (8, 8)))
    pixels = clf.to_input(write_png(tmp_path / "x.png", 1, (8, 8), 0))
    with pytest.raises(ConfigError, match="no convolution layers"):
        write_features(clf.model, pixels, clf.model_input(pixels), tmp_path / "out")


def test_cli_writes_and_prints_the_pngs(tmp_path, capsys, monkeypatch):
    ckpt = saved_model(tmp_path, *MODELS["tutorial"][:2], 3, (32, 32))
    image = write_png(tmp_path / "x.png", 3, (32, 32), 0)
    monkeypatch.chdir(tmp_path)

    assert main(["features", str(ckpt), str(image)]) == 0  # the default --out: features/<image name>/ beside the model
    printed = capsys.readouterr().out.split()
    assert [p.split("/")[-1] for p in printed] == ["features_layers.0.png", "features_layers.3.png",
                                                   "features_layers.6.png", "filters.png"]
    assert all(Path(p).is_file() and Path(p).parent == tmp_path / "features" / "x" for p in printed)


def test_cli_reports_an_unreadable_image_in_one_line(tmp_path, capsys):
    ckpt = saved_model(tmp_path, *MODELS["tutorial"][:2], 3, (32, 32))
    (tmp_path / "x.png").write_text("hello")
    assert main(["features", str(ckpt), str(tmp_path / "x.png"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "x.png" in err and err.count("\n") == 1
