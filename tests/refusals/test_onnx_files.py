"""Hostile .onnx files (issue 21's second probe) and the JSON that predict and evaluate print.

Every file here is a real ONNX model written with onnx.helper in convnet's format (the uint8
`images` input, the float32 `logits` output, the colour model's metadata): a small graph whose
logits are the images' channel means, with one hostile part. onnxruntime runs it for real.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto  # noqa: E402
from onnx import helper as oh  # noqa: E402

from convnet.cli import main  # noqa: E402
from convnet.errors import CheckpointError  # noqa: E402
from convnet.inference.loading import load_classifier  # noqa: E402
from convnet.inference.model_file import load_checkpoint  # noqa: E402
from tests.refusals.conftest import assert_one_sentence, no_hang  # noqa: E402

OPSET = 17
SECRET = np.array([1.5, 2.5, 3.5], np.float32)  # secret.txt's bytes: logits that would show in the output if read


@pytest.fixture(scope="module")
def info_json(model_file) -> str:
    """The colour model's metadata (classes blue, green, red; 3x24x24), for every handmade file."""
    return load_checkpoint(model_file).info.to_json()


def write_onnx(path, info_json: str, tail: list, initializers=(), sparse=(), functions=(), domains=()):
    """A convnet .onnx file: images -> float -> per-channel means `features` (batch, 3) -> `tail` -> logits."""
    head = [
        oh.make_node("Cast", ["images"], ["pixels"], to=TensorProto.FLOAT),
        oh.make_node("GlobalAveragePool", ["pixels"], ["means"]),  # (B, 3, 1, 1)
        oh.make_node("Flatten", ["means"], ["features"]),  # (B, 3)
    ]
    graph = oh.make_graph(
        head + tail, "hostile",
        [oh.make_tensor_value_info("images", TensorProto.UINT8, ["batch", 3, 24, 24])],
        [oh.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        initializer=list(initializers), sparse_initializer=list(sparse),
    )
    opsets = [oh.make_opsetid("", OPSET)] + [oh.make_opsetid(d, 1) for d in domains]
    model = oh.make_model(graph, opset_imports=opsets, functions=list(functions))
    for key, value in (("format", "convnet.onnx/1"), ("convnet", info_json)):
        model.metadata_props.add(key=key, value=value)
    path.write_bytes(model.SerializeToString())
    return path


def const(name: str, values, dtype=TensorProto.FLOAT, dims=None):
    values = list(np.asarray(values).flatten())
    return oh.make_tensor(name, dtype, [len(values)] if dims is None else dims, values)


def external(name: str) -> TensorProto:
    """A float (3,) tensor whose data would be read from secret.txt."""
    tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[3], data_location=TensorProto.EXTERNAL)
    tensor.external_data.add(key="location", value="secret.txt")
    return tensor


def sparse(values: TensorProto):
    return oh.make_sparse_tensor(values, const("indices", [0, 1, 2], TensorProto.INT64), [3])


# logits = features * 0 + b: the images do not matter, softmax(b) is every answer.
def bias_tail():
    return [oh.make_node("Mul", ["features", "zero"], ["zeros"]), oh.make_node("Add", ["zeros", "b"], ["logits"])]


ZERO = const("zero", [0.0], dims=[])


def _if_branch():
    branch = oh.make_graph([oh.make_node("Constant", [], ["b_out"], value=external("v"))], "branch", [],
                           [oh.make_tensor_value_info("b_out", TensorProto.FLOAT, [3])])
    return [oh.make_node("Constant", [], ["yes"], value=const("t", [True], TensorProto.BOOL, dims=[])),
            oh.make_node("If", ["yes"], ["b"], then_branch=branch, else_branch=branch)]


def _tensor_list():
    add = oh.make_node("Add", ["zeros", "b"], ["logits"], spare=[external("v")])  # an attribute of type TENSORS
    return dict(tail=[bias_tail()[0], add], initializers=[ZERO, const("b", SECRET)])


def _function():
    body = [oh.make_node("Constant", [], ["c"], value=external("v")), oh.make_node("Add", ["x", "c"], ["y"])]
    function = oh.make_function("local", "AddSecret", ["x"], ["y"], body, opset_imports=[oh.make_opsetid("", OPSET)])
    tail = [oh.make_node("Mul", ["features", "zero"], ["zeros"]),
            oh.make_node("AddSecret", ["zeros"], ["logits"], domain="local")]
    return dict(tail=tail, initializers=[ZERO], functions=[function], domains=["local"])


# Where a tensor can sit in an ONNX model -> write_onnx's arguments with secret.txt's bytes there.
EXTERNAL_DATA = {
    "an initializer": lambda: dict(tail=bias_tail(), initializers=[ZERO, external("b")]),
    "a Constant's value": lambda: dict(tail=[oh.make_node("Constant", [], ["b"], value=external("v"))] + bias_tail(),
                                       initializers=[ZERO]),
    "a Constant's sparse_value": lambda: dict(
        tail=[oh.make_node("Constant", [], ["b"], sparse_value=sparse(external("v")))] + bias_tail(),
        initializers=[ZERO]),
    "a sparse initializer": lambda: dict(tail=bias_tail(), initializers=[ZERO], sparse=[sparse(external("b"))]),
    "a list of tensors on a node": _tensor_list,
    "an If branch": lambda: dict(tail=_if_branch() + bias_tail(), initializers=[ZERO]),
    "a local function": _function,
}


def softmax(x) -> np.ndarray:
    e = np.exp(np.asarray(x, np.float64) - np.max(x))
    return e / e.sum()


def six_digits(value: float) -> bool:
    return value == float(f"{value:.6g}")


def floats(obj):
    """Every float in a parsed JSON value."""
    if isinstance(obj, float):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from floats(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from floats(v)


@pytest.fixture
def secret(tmp_path, monkeypatch):
    """secret.txt in the current folder, where onnxruntime looks for a location given without a model path."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "secret.txt").write_bytes(SECRET.tobytes())
    return tmp_path / "secret.txt"


@pytest.mark.parametrize("place", EXTERNAL_DATA)
def test_an_onnx_file_never_reads_another_file(place, secret, info_json, colour_folder, convnet, tmp_path):
    path = write_onnx(tmp_path / "model.onnx", info_json, **EXTERNAL_DATA[place]())
    r = convnet("predict", path, colour_folder / "red" / "000.png", "--json")
    assert r.status == 2 and r.out == ""
    assert_one_sentence(r.err, "external files")
    assert f"{softmax(SECRET)[2]:.3f}" not in r.err


def test_the_same_bias_held_in_the_file_is_the_answer_as_valid_json(secret, info_json, colour_folder, convnet,
                                                                     tmp_path):
    # The control for the test above: the harness does show a bias that the graph holds itself.
    path = write_onnx(tmp_path / "model.onnx", info_json, bias_tail(), initializers=[ZERO, const("b", SECRET)])
    r = convnet("predict", path, colour_folder / "red", "--json", "--top-k", "3")
    assert r.status == 0, r.err
    lines = [json.loads(line) for line in r.out.splitlines()]
    assert len(lines) == 40
    classes = json.loads(info_json)["classes"]
    want = sorted(zip(classes, softmax(SECRET), strict=True), key=lambda cp: -cp[1])
    for line in lines:
        got = [(p["class"], p["probability"]) for p in line["predictions"]]
        assert [c for c, _ in got] == [c for c, _ in want]
        assert all(abs(p - q) <= 1e-6 and six_digits(p) for (_, p), (_, q) in zip(got, want, strict=True))


# Outputs that disagree with the metadata (3 classes) on the probe batch of 2 zero images.
WRONG_OUTPUTS = {
    "4 classes for 3": lambda: dict(tail=[oh.make_node("MatMul", ["features", "w"], ["logits"])],
                                    initializers=[const("w", np.ones((3, 4)), dims=[3, 4])]),
    "one row for the batch": lambda: dict(
        tail=[oh.make_node("ReduceMean", ["features"], ["logits"], axes=[0], keepdims=1)]),
    "one number per image": lambda: dict(tail=[oh.make_node("ReduceSum", ["features", "one"], ["logits"], keepdims=0)],
                                         initializers=[const("one", [1], TensorProto.INT64)]),
    "NaN logits": lambda: dict(tail=[oh.make_node("Add", ["features", "nan"], ["logits"])],
                               initializers=[const("nan", [math.nan], dims=[])]),
    "infinite logits": lambda: dict(tail=[oh.make_node("Add", ["features", "inf"], ["logits"])],
                                    initializers=[const("inf", [math.inf], dims=[])]),
}


@pytest.mark.parametrize("kind", WRONG_OUTPUTS)
def test_an_onnx_file_whose_output_disagrees_with_its_metadata_is_refused_at_load(kind, info_json, colour_folder,
                                                                                   convnet, tmp_path):
    path = write_onnx(tmp_path / "model.onnx", info_json, **WRONG_OUTPUTS[kind]())
    with pytest.raises(CheckpointError, match="batch of 2"):
        load_classifier(path)
    # refused before a port is taken; served, it would run until no_hang stops it
    serve = ["serve", path, "--port", "0"]
    for argv in (["predict", path, colour_folder / "red", "--json"],
                 ["evaluate", path, "--data", colour_folder, "--json", "--out", tmp_path / "eval"], serve):
        r = convnet(*argv)
        assert r.status == 2 and r.out == ""
        assert_one_sentence(r.err, str(path))


# Graphs that pass the probe (zero images) and go wrong on real ones.
def _nan_unless_black():
    """log(0.5 - mean pixel): finite for black images, NaN for any whose mean is above 0.5."""
    tail = [oh.make_node("Sub", ["half", "features"], ["d"]), oh.make_node("Log", ["d"], ["logits"])]
    return dict(tail=tail, initializers=[const("half", [0.5], dims=[])])


def _first_two_rows():
    """The first two rows of the logits, whatever the batch."""
    bounds = [const(n, [v], TensorProto.INT64) for n, v in (("start", 0), ("end", 2), ("axis", 0))]
    return dict(tail=[oh.make_node("Slice", ["features", "start", "end", "axis"], ["logits"])], initializers=bounds)


WRONG_AT_RUN_TIME = {"NaN logits": (_nan_unless_black, "not finite"),
                     "a batch cut to 2": (_first_two_rows, "shape [2, 3]")}


@pytest.mark.parametrize("kind", WRONG_AT_RUN_TIME)
def test_a_batch_with_wrong_logits_is_one_sentence_never_json_nan_or_a_score(kind, info_json, colour_folder, convnet,
                                                                              tmp_path):
    make, fragment = WRONG_AT_RUN_TIME[kind]
    path = write_onnx(tmp_path / "model.onnx", info_json, **make())
    load_classifier(path)  # the probe passes
    for argv in (["predict", path, colour_folder / "red", "--json"],
                 ["evaluate", path, "--data", colour_folder, "--json", "--out", tmp_path / "eval"]):
        r = convnet(*argv)
        assert r.status == 2 and r.out == "", r.out[:200]
        assert_one_sentence(r.err, fragment)


def _matmul_chain(n: int = 200, side: int = 2048) -> dict:
    """n chained side x side MatMuls of a ConstantOfShape: a 5 KB file, 17 GFLOP a link."""
    tail = [
        oh.make_node("ConstantOfShape", ["side2"], ["m0"], value=const("one", [1.0])),
        *(oh.make_node("MatMul", [f"m{i}", "m0"], [f"m{i + 1}"]) for i in range(n)),
        oh.make_node("ReduceSum", [f"m{n}"], ["total"], keepdims=0),
        oh.make_node("Mul", ["total", "zero"], ["nothing"]),
        oh.make_node("Add", ["features", "nothing"], ["logits"]),
    ]
    return dict(tail=tail, initializers=[ZERO, const("side2", [side, side], TensorProto.INT64)])


def test_a_graph_of_chained_matmuls_is_refused_in_bounded_time(info_json, colour_folder, convnet, tmp_path):
    # onnxruntime's constant folding would compute the whole chain while the session is created.
    path = write_onnx(tmp_path / "model.onnx", info_json, **_matmul_chain())
    r = convnet("predict", path, colour_folder / "red" / "000.png")  # under no_hang
    assert r.status == 2 and r.out == ""
    assert_one_sentence(r.err, "longer than")


def test_a_4_tb_constant_is_one_sentence_without_onnxruntimes_log(info_json, colour_folder, capfd, tmp_path):
    tail = [
        oh.make_node("ConstantOfShape", ["huge"], ["big"], value=const("one", [1.0])),  # 2^20 x 2^20 float32: 4 TiB
        oh.make_node("ReduceSum", ["big"], ["total"], keepdims=0),
        oh.make_node("Mul", ["total", "zero"], ["nothing"]),
        oh.make_node("Add", ["features", "nothing"], ["logits"]),
    ]
    path = write_onnx(tmp_path / "model.onnx", info_json, tail,
                      initializers=[ZERO, const("huge", [2**20, 2**20], TensorProto.INT64)])
    capfd.readouterr()
    with no_hang():
        status = main(["predict", str(path), str(colour_folder / "red" / "000.png")])
    out, err = capfd.readouterr()  # file descriptors: onnxruntime logs from C++, past sys.stderr
    assert status == 2 and out == ""
    assert_one_sentence(err, str(path))


def test_evaluate_json_is_valid_rounded_and_right(info_json, colour_folder, convnet, tmp_path):
    # logits (1, 0, 0) for every image: class 0 is always predicted, with probability e / (e + 2).
    path = write_onnx(tmp_path / "model.onnx", info_json, bias_tail(), initializers=[ZERO, const("b", [1.0, 0.0, 0.0])])
    r = convnet("evaluate", path, "--data", colour_folder, "--json", "--out", tmp_path / "eval")
    assert r.status == 0, r.err
    got = json.loads(r.out)
    classes = json.loads(info_json)["classes"]
    counts = np.array([len(list((colour_folder / c).glob("*.png"))) for c in classes])
    p = softmax([1.0, 0.0, 0.0])
    assert got["n"] == counts.sum()
    assert got["accuracy"] == pytest.approx(counts[0] / counts.sum(), abs=1e-6)
    assert got["loss"] == pytest.approx(-(counts * np.log(p)).sum() / counts.sum(), abs=1e-5)
    assert got["per_class"][classes[0]]["precision"] == pytest.approx(counts[0] / counts.sum(), abs=1e-6)
    assert all(six_digits(x) for x in floats(got)), [x for x in floats(got) if not six_digits(x)]
