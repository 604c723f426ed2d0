"""`convnet explain`: the worked example against hand-computed maps, scipy and NumPy."""
import contextlib
import io
import json
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy.signal import correlate
from scipy.special import softmax

from convnet.cli import main
from convnet.errors import SpecError
from convnet.models import create_model
from convnet.scratch.explain import render_text, worked_example

# A 4x4 RGB image and 2x2 filter chosen so that, with bias -2,
# out[i, j] = R[i, j] - R[i+1, j+1] + G[i, j+1] + B[i+1, j] - 2.
IMAGE = [
    [[1, 2, 0, 1], [0, 1, 3, 1], [2, 0, 1, 0], [1, 1, 0, 2]],  # R
    [[0, 1, 2, 0], [1, 0, 0, 1], [2, 1, 1, 0], [0, 0, 1, 1]],  # G
    [[3, 0, 1, 0], [0, 2, 0, 1], [1, 0, 0, 2], [0, 1, 1, 0]],  # B
]
FILTERS = [[[1, 0], [0, -1]], [[0, 1], [0, 0]], [[0, 0], [1, 0]]]


def test_conv_relu_and_pooling_match_the_hand_computed_maps():
    r = worked_example(np.array(IMAGE), filters=np.array(FILTERS), bias=-2)
    # By hand, e.g. out[0,1] = R01 - R12 + G02 + B11 - 2 = 2 - 3 + 2 + 2 - 2 = 1.
    assert r["conv"] == [[[-1, 1, -3], [-1, -2, 2], [0, 0, -2]]]
    assert r["relu"] == [[[0, 1, 0], [0, 0, 2], [0, 0, 0]]]
    assert r["max_pool"] == [[[1, 2], [0, 2]]]
    assert r["avg_pool"] == [[[0.25, 0.75], [0, 0.5]]]
    assert r["flat"] == [1, 2, 0, 2]
    assert r["output_size"]["conv"] == {"n": 4, "k": 2, "p": 0, "s": 1, "out": 3}


def pooled(x: np.ndarray, k: int, s: int, reduce) -> np.ndarray:
    """Pool a 2-D map with explicit loops: the plain definition, independent of the engine."""
    n = (x.shape[0] - k) // s + 1
    return np.array([[reduce(x[i * s : i * s + k, j * s : j * s + k]) for j in range(n)] for i in range(n)])


def explain_json(*args: str) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["explain", "--json", *args]) == 0
    return json.loads(out.getvalue())


def check_against_scipy(r: dict) -> None:
    s, p = r["stride"], r["padding"]
    image = np.pad(np.array(r["image"], float), ((0, 0), (p, p), (p, p)))
    filters = np.array(r["filters"], float)
    full = sum(correlate(image[c], filters[c], mode="valid") for c in range(len(image))) + r["bias"]
    conv = full[::s, ::s]
    np.testing.assert_allclose(r["conv"][0], conv, rtol=1e-12)
    relu = np.maximum(conv, 0)
    np.testing.assert_allclose(r["relu"][0], relu, rtol=1e-12)
    q, qs = r["pool_kernel"], r["pool_stride"]
    max_pool = pooled(relu, q, qs, np.max)
    np.testing.assert_allclose(r["max_pool"][0], max_pool, rtol=1e-12)
    np.testing.assert_allclose(r["avg_pool"][0], pooled(relu, q, qs, np.mean), rtol=1e-12)
    logits = np.array(r["dense_weights"]) @ max_pool.ravel() + np.array(r["dense_bias"])
    np.testing.assert_allclose(r["logits"], logits, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(r["probabilities"], softmax(logits), rtol=1e-12)
    assert r["output_size"]["conv"]["out"] == conv.shape[0] and r["output_size"]["pool"]["out"] == max_pool.shape[0]


def test_default_json_matches_scipy_and_has_the_tutorial_shapes():
    r = explain_json()
    assert np.array(r["image"]).shape == (3, 4, 4) and np.array(r["filters"]).shape == (3, 2, 2)
    assert np.array(r["conv"]).shape == (1, 3, 3) and np.array(r["max_pool"]).shape == (1, 2, 2)
    assert np.array(r["dense_weights"]).shape == (2, 4) and r["output_names"] == ["dog", "not dog"]
    check_against_scipy(r)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10**6), st.integers(1, 4), st.integers(1, 3), st.integers(0, 2), st.integers(1, 3),
       st.integers(1, 2))
def test_json_matches_scipy_for_any_settings_that_fit(seed, kernel, stride, padding, pool, pool_stride):
    n = (4 + 2 * padding - kernel) // stride + 1
    if n < 1 or n < pool:
        with pytest.raises(SpecError):
            worked_example(seed=seed, kernel=kernel, stride=stride, padding=padding, pool=pool, pool_stride=pool_stride)
        return
    args = ["--seed", seed, "--kernel", kernel, "--stride", stride, "--padding", padding, "--pool", pool,
            "--pool-stride", pool_stride]
    check_against_scipy(explain_json(*map(str, args)))


def test_text_spells_out_every_product_and_the_formula():
    r = worked_example(np.array(IMAGE), filters=np.array(FILTERS), bias=-2)
    text = render_text(r)
    lines = [line for line in text.splitlines() if line.strip().startswith("out[")]
    assert len(lines) == 9
    assert lines[1].strip() == ("out[0,1] = (2*1 + 0*0 + 1*0 + 3*(-1)) [R] + (1*0 + 2*1 + 0*0 + 0*0) [G] "
                                "+ (0*0 + 1*0 + 2*1 + 0*0) [B] + (-2) [bias] = 1")
    for line in lines:  # the printed arithmetic adds up to the printed result, and to the map
        i, j, expression, value = re.fullmatch(r"\s*out\[(\d),(\d)\] = (.*) = (\S+)", line).groups()
        assert eval(re.sub(r"\[\w+\]", "", expression)) == float(value) == r["conv"][0][int(i)][int(j)]
    assert "(n + 2p - k) / s + 1 = (4 + 2*0 - 2) / 1 + 1 = 3" in text
    assert "max[0,1] = max(1, 0, 0, 2) = 2" in text and "avg[0,1] = (1 + 0 + 0 + 2) / 4 = 0.75" in text
    assert "(4 + 2*1 - 3) / 2 + 1 = 2  (rounded down" in render_text(worked_example(kernel=3, stride=2, padding=1))


def test_parameter_arithmetic_is_the_tutorials():
    r = worked_example()
    text = render_text(r)
    assert "200*200*3 = 120,000 weights" in text and "3*3*3 = 27 weights (+1 bias = 28)" in text
    assert "122,570" in text
    torch_model = create_model("tutorial")
    assert r["parameters"]["network"]["total"] == sum(p.numel() for p in torch_model.parameters()) == 122_570
    counts = {f"layers.{i}": sum(p.numel() for p in m.parameters()) for i, m in enumerate(torch_model.layers)}
    assert {row["name"]: row["count"] for row in r["parameters"]["network"]["layers"]} == counts
    assert "layers.3   conv2d     out 64x13x13  parameters 64x32x3x3 + 64 = 18,496" in text


@pytest.mark.parametrize(
    "args, message",
    [
        (["--kernel", "5"], "does not fit the 4x4 image"),
        (["--kernel", "3", "--pool", "3"], "pooling window does not fit the 2x2"),
        (["--stride", "0"], "--stride is 0"),
        (["--padding", "-1"], "--padding is -1"),
    ],
)
def test_settings_that_leave_nothing_are_one_sentence_errors(capsys, args, message):
    assert main(["explain", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_image_option_uses_the_files_pixels(tmp_path, capsys):
    pixels = np.random.default_rng(0).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "tiny.png")
    r = explain_json("--image", str(tmp_path / "tiny.png"))
    assert np.array_equal(np.array(r["image"]), pixels.transpose(2, 0, 1))
    check_against_scipy(r)
    (tmp_path / "broken.png").write_bytes(b"no image")
    assert main(["explain", "--image", str(tmp_path / "broken.png")]) == 2
    assert "Cannot read" in capsys.readouterr().err


def test_png_option_draws_a_figure_and_keeps_json_on_stdout(tmp_path):
    out = tmp_path / "example.png"
    r = explain_json("--png", str(out))  # the parse succeeds: nothing else on stdout
    assert r["kernel"] == 2
    with Image.open(out) as img:
        assert img.format == "PNG" and img.width > 400 and img.height > 400
        # Not blank: the grids are coloured.
        assert len(np.unique(np.asarray(img.convert("RGB")).reshape(-1, 3), axis=0)) > 50
