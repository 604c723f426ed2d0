"""The tutorial's network: parameters and shapes against the tutorial's own Keras summary."""
import pytest
import torch

from convnet.errors import SpecError
from convnet.models import create_model, list_models
from convnet.models.summary import summarize

# model.summary() of the tutorial's Keras model, (H, W, C) rewritten as (C, H, W).
KERAS_SUMMARY = [
    ("Conv2d", (32, 30, 30), 896),
    ("MaxPool2d", (32, 15, 15), 0),
    ("Conv2d", (64, 13, 13), 18_496),
    ("MaxPool2d", (64, 6, 6), 0),
    ("Conv2d", (64, 4, 4), 36_928),
    ("Flatten", (1024,), 0),
    ("Linear", (64,), 65_600),
    ("Linear", (10,), 650),
]


def test_tutorial_matches_the_keras_summary():
    model = create_model("tutorial")
    assert sum(p.numel() for p in model.parameters()) == 122_570
    rows = [r for r in summarize(model, (3, 32, 32)) if "ReLU" not in r.name]
    assert [(r.name.split("(")[1].rstrip(")"), r.output_shape, r.params) for r in rows] == KERAS_SUMMARY


def test_tutorial_adapts_to_size_channels_and_classes():
    model = create_model("tutorial", num_classes=5, in_chans=1, input_size=(28, 28))
    # 28 -conv3-> 26 -pool-> 13 -conv3-> 11 -pool-> 5 -conv3-> 3: the dense layer sees 64*3*3.
    expected = (1 * 9 * 32 + 32) + (32 * 9 * 64 + 64) + (64 * 9 * 64 + 64) + (64 * 9 * 64 + 64) + (64 * 5 + 5)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 5)


def test_tutorial_is_the_spec_string():
    spec = create_model("spec", arch="c32-p-c64-p-c64-f-d64")
    assert sum(p.numel() for p in spec.parameters()) == 122_570
    assert [type(m) for m in spec.modules()] == [type(m) for m in create_model("tutorial").modules()]


def test_every_registered_model_follows_the_contract():
    for name in list_models():
        model = create_model(name, num_classes=7, in_chans=3, input_size=(32, 32)).eval()
        x = torch.randn(2, 3, 32, 32)
        assert model.num_classes == 7 and model.in_chans == 3
        assert torch.allclose(model.forward_head(model.forward_features(x)), model(x), atol=1e-5)


@pytest.mark.parametrize(
    "spec, size, fragment",
    [
        ("c32-p-x9", 32, "Layer 3 'x9'"),
        ("c32-p-c64-p-c64-p-c64-p", 16, "Layer 5 'c64'"),  # 16-14-7-5-2-0
        ("c32--d64", 32, "empty layer"),
        ("c32-f-c64", 32, "Layer 3 'c64'"),
        ("b-c32", 32, "Layer 1 'b'"),
    ],
)
def test_bad_specs_name_the_offending_layer(spec, size, fragment):
    with pytest.raises(SpecError, match=fragment):
        create_model("spec", arch=spec, input_size=(size, size))


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(ValueError, match="tutorial"):
        create_model("nope")


@pytest.mark.parametrize("spec", ["c32-p-c64-p-c64-f-d64", "c8-b-p-c8-a-f-d16"])
def test_pool_before_relu_computes_what_the_layer_list_says(spec):
    # Reference: the layers applied one by one in float64, ReLU before pooling, as listed.
    torch.manual_seed(0)
    model = create_model("spec", num_classes=10, in_chans=3, input_size=(32, 32), arch=spec).double().train()
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    reference = x
    for layer in model.layers:
        reference = layer(reference)
    out = model(x)
    torch.testing.assert_close(out, reference, rtol=0, atol=0)
    grads = torch.autograd.grad(out.square().sum(), list(model.parameters()))
    ref_grads = torch.autograd.grad(reference.square().sum(), list(model.parameters()))
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["tutorial", "spec"])
def test_the_summary_lists_every_layer_the_forward_pass_runs(name):
    # The pool-then-ReLU order runs the ReLU modules themselves, so hooks (the summary, feature
    # maps) see every layer of the list, ReLUs included.
    model = create_model(name, **({"arch": "c8-p-c16-p-f-d16"} if name == "spec" else {}))
    leaves = {n for n, m in model.named_modules() if not list(m.children())}
    assert {row.name.split(" ")[0] for row in summarize(model, (3, 32, 32))} == leaves
