"""`convnet export`: the .onnx file and the Triton repository it writes, the commands that run the
.onnx file, and what export and the ONNX reader refuse."""
import json
import os
import pickle
import re
import sys

import pytest

pytest.importorskip("onnxruntime")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

from convnet.cli import main  # noqa: E402
from convnet.errors import CheckpointError, ConfigError  # noqa: E402
from convnet.formats import MAX_MODEL_BYTES  # noqa: E402
from convnet.inference.loading import load_classifier  # noqa: E402
from convnet.inference.model_file import load_checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def run_dir(colour_folder, tmp_path_factory):
    """A run folder of the tutorial network trained for one epoch on the 3-colour folder, with its .onnx export."""
    runs = tmp_path_factory.mktemp("runs")
    argv = ["train", "--data", colour_folder, "--epochs", "1", "--batch-size", "32", "--normalize", "standard",
            "--runs-dir", runs, "--name", "colours", "--quiet"]
    assert main([str(a) for a in argv]) == 0
    assert main(["export", str(runs / "colours" / "model.safetensors")]) == 0
    return runs / "colours"


def cli(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_the_onnx_file_is_valid_and_carries_the_model_files_metadata(run_dir):
    model = onnx.load(run_dir / "model.onnx")
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["format"] == "convnet.onnx/1"
    with open(run_dir / "model.safetensors", "rb") as f:  # safetensors: 8-byte header length, then the JSON header
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    assert json.loads(meta["convnet"]) == json.loads(header["__metadata__"]["convnet"])
    (images,) = model.graph.input
    assert images.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_param or d.dim_value for d in images.type.tensor_type.shape.dim] == ["batch", 3, 24, 24]


def test_predict_and_evaluate_give_the_same_answers_with_the_onnx_file(run_dir, colour_folder, capsys):
    answers = {}
    for model in ("model.safetensors", "model.onnx"):
        status, out, _ = cli(capsys, "predict", run_dir / model, colour_folder / "red", colour_folder / "blue",
                             "--json", "--tta", "2", "--top-k", "3")
        assert status == 0
        predictions = [json.loads(line) for line in out.splitlines()]
        # the run's own split, from config.json
        status, out, _ = cli(capsys, "evaluate", run_dir / model, "--split", "val", "--json", "--out",
                             run_dir / f"eval-{model}")
        assert status == 0
        answers[model] = predictions, json.loads(out)
    (torch_predictions, torch_eval), (onnx_predictions, onnx_eval) = answers.values()
    assert len(onnx_predictions) == 80
    for a, b in zip(torch_predictions, onnx_predictions, strict=True):
        assert a["path"] == b["path"]
        assert [p["class"] for p in a["predictions"]] == [p["class"] for p in b["predictions"]]
        assert [p["probability"] for p in a["predictions"]] == pytest.approx(
            [p["probability"] for p in b["predictions"]], abs=1e-5)
    assert onnx_eval["confusion_matrix"] == torch_eval["confusion_matrix"] and onnx_eval["n"] == torch_eval["n"] > 0
    assert onnx_eval["loss"] == pytest.approx(torch_eval["loss"], abs=1e-5)


def parse_pbtxt(text: str) -> dict:
    """Protobuf text format -> {field: [values]}, messages as dicts: enough of the grammar for config.pbtxt."""
    tokens = re.findall(r'"[^"]*"|[{}\[\]:,]|[^\s{}\[\]:,"]+', text)
    pos = 0

    def value():
        nonlocal pos
        token = tokens[pos]
        pos += 1
        if token == "{":
            return message("}")
        if token.startswith('"'):
            return token[1:-1]
        return int(token) if re.fullmatch(r"-?\d+", token) else token

    def message(end):
        nonlocal pos
        fields: dict = {}
        while pos < len(tokens) and tokens[pos] != end:
            name = tokens[pos]
            pos += 1
            if tokens[pos] == ":":
                pos += 1
            if tokens[pos] == "[":
                pos += 1
                while tokens[pos] != "]":
                    fields.setdefault(name, []).append(value())
                    if tokens[pos] == ",":
                        pos += 1
                pos += 1
            else:
                fields.setdefault(name, []).append(value())
        pos += 1
        return fields

    return message(None)


def test_triton_repository(run_dir, capsys, tmp_path):
    repo = tmp_path / "repo"
    status, out, _ = cli(capsys, "export", run_dir, "--format", "triton", "--out", repo, "--max-batch-size", "64")
    assert status == 0 and out.strip() == str(repo / "colours")
    model_dir = repo / "colours"
    assert sorted(str(p.relative_to(model_dir)) for p in model_dir.rglob("*")) == ["1", "1/model.onnx", "config.pbtxt",
                                                                                  "labels.txt"]
    config = parse_pbtxt((model_dir / "config.pbtxt").read_text())
    assert (config["name"] == ["colours"] and config["platform"] == ["onnxruntime_onnx"]
            and config["max_batch_size"] == [64])
    assert config["input"] == [{"name": ["images"], "data_type": ["TYPE_UINT8"], "dims": [3, 24, 24]}]
    assert config["output"] == [{"name": ["logits"], "data_type": ["TYPE_FP32"], "dims": [3],
                                 "label_filename": ["labels.txt"]}]
    assert config["dynamic_batching"] == [{}]
    clf = load_checkpoint(run_dir)
    assert (model_dir / "labels.txt").read_text().splitlines() == list(clf.classes)
    # What Triton's onnxruntime backend does: feed the named uint8 input, read the named output.
    session = ort.InferenceSession(str(model_dir / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    images = torch.randint(0, 256, (5, 3, 24, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    (logits,) = session.run(["logits"], {"images": images.numpy()})
    np.testing.assert_allclose(logits, clf.logits(images).numpy(), atol=1e-4, rtol=0)
    # Again: refused without --force, replaced with it.
    status, _, err = cli(capsys, "export", run_dir, "--format", "triton", "--out", repo)
    assert status == 2 and "already exists" in err and err.count("\n") == 1
    assert main(["export", str(run_dir), "--format", "triton", "--out", str(repo), "--force"]) == 0
    assert sorted(p.name for p in repo.iterdir()) == ["colours"]  # no staging folder left behind


def test_export_refuses_to_overwrite_without_force(run_dir, capsys, tmp_path):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"precious")
    status, _, err = cli(capsys, "export", run_dir, "--out", out)
    assert status == 2 and err.startswith("error: ") and "--force" in err and err.count("\n") == 1
    assert out.read_bytes() == b"precious"
    assert main(["export", str(run_dir), "--out", str(out), "--force"]) == 0
    assert load_classifier(out).classes == load_checkpoint(run_dir).classes
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # the temporary file was renamed, not left


@pytest.mark.parametrize("content", [b"", b"#!/bin/sh\necho hello\n", b"\x89PNG\r\n\x1a\n" + bytes(100)],
                         ids=["empty", "script", "png"])
def test_export_refuses_a_file_that_is_not_a_model(content, capsys, tmp_path):
    bogus = tmp_path / "model.safetensors"
    bogus.write_bytes(content)
    status, _, err = cli(capsys, "export", bogus)
    assert status == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (["--out", "{notes}"], "is a file, not a folder"),  # triton: --out is the repository folder
        (["--out", "{notes}/below"], "is a file, not a folder"),
        (["--out", "a\0b"], "NUL"),
        (["--out", ""], "--out is empty"),
        (["--name", ""], "Triton model name"),
        (["--name", "../up"], "Triton model name"),
        (["--max-batch-size", "0"], "--max-batch-size"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_export_refuses_where_it_cannot_write(options, fragment, run_dir, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a folder")
    options = [o.replace("{notes}", str(notes)) for o in options]
    status, out, err = cli(capsys, "export", run_dir, "--format", "triton", *options)
    assert status == 2 and out == "" and fragment in err and err.count("\n") == 1 and "Traceback" not in err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"] and notes.read_text() == "not a folder"


class Payload:
    """Unpickling this creates `marker`: what a hostile pickle does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _edited(model_file, edit) -> bytes:
    model = onnx.load(model_file)
    edit(model)
    return model.SerializeToString()


def _info_edit(pattern: str, replacement: str):
    """An edit of the "convnet" metadata JSON (the ModelInfo) that must change it."""

    def edit(model):
        (prop,) = [p for p in model.metadata_props if p.key == "convnet"]
        prop.value, n = re.subn(pattern, replacement, prop.value)
        assert n == 1

    return edit


def _external(model):
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value="/etc/passwd")


def _fixed_batch(model):
    model.graph.input[0].type.tensor_type.shape.dim[0].Clear()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1


def _loop(model):
    body = onnx.helper.make_graph([], "body", [], [])
    model.graph.node.append(onnx.helper.make_node("Loop", ["", ""], ["spin"], body=body))


# kind -> (bytes of the .onnx file from the real export, a fragment of the one-line error)
HOSTILE = {
    "empty": (lambda f, m: b"", "not a convnet model"),
    "script": (lambda f, m: b"#!/bin/sh\nrm -rf ~\n", "ONNX"),
    "pickle": (lambda f, m: pickle.dumps(Payload(m)), "ONNX"),
    "truncated": (lambda f, m: f.read_bytes()[: f.stat().st_size // 2], "ONNX"),
    "no convnet metadata": (lambda f, m: _edited(f, lambda mo: mo.ClearField("metadata_props")), "not a convnet model"),
    "damaged metadata": (lambda f, m: _edited(f, _info_edit(r"^.*$", "{not json")), "damaged convnet metadata"),
    "metadata with a bad mean": (lambda f, m: _edited(f, _info_edit(r'"mean": \[[^]]*\]', '"mean": [0.5]')), "'mean'"),
    "metadata for another input size": (
        lambda f, m: _edited(f, _info_edit(r'"input_size": \[24, 24\]', '"input_size": [32, 32]')), "uint8 input"),
    "float input": (
        lambda f, m: _edited(f, lambda mo: setattr(mo.graph.input[0].type.tensor_type, "elem_type",
                                                   onnx.TensorProto.FLOAT)),
        "uint8 input"),
    "fixed batch": (lambda f, m: _edited(f, _fixed_batch), "uint8 input"),
    "wrong output": (lambda f, m: _edited(f, lambda mo: setattr(mo.graph.output[0], "name", "probs")),
                     "float32 output"),
    "custom operator": (lambda f, m: _edited(f, lambda mo: setattr(mo.graph.node[0], "domain", "evil.ops")),
                        "outside the standard ONNX set"),
    "external data": (lambda f, m: _edited(f, _external), "external files"),
    "control flow": (lambda f, m: _edited(f, _loop), "control flow"),
}




@pytest.mark.parametrize("kind", HOSTILE)
def test_a_hostile_onnx_file_is_one_sentence_and_exit_2(kind, run_dir, colour_folder, capsys, tmp_path):
    make, fragment = HOSTILE[kind]
    marker = tmp_path / "PWNED"
    path = tmp_path / "model.onnx"
    path.write_bytes(make(run_dir / "model.onnx", marker))
    with pytest.raises(CheckpointError, match=re.escape(fragment)):
        load_classifier(path)
    status, out, err = cli(capsys, "predict", path, colour_folder / "red" / "000.png")
    assert status == 2 and out == "" and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert not marker.exists()


def test_a_huge_onnx_file_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "huge.onnx"
    with open(path, "wb") as f:
        f.truncate(MAX_MODEL_BYTES + 1)  # sparse: no disk used, nothing to read
    with pytest.raises(CheckpointError, match="larger than"):
        load_classifier(path)


def test_without_onnxruntime_the_error_names_the_extra(run_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    with pytest.raises(ConfigError, match=re.escape("pip install 'convnet[onnx]'")):
        load_classifier(run_dir / "model.onnx")
    assert isinstance(load_classifier(run_dir).model, torch.nn.Module)  # model files do not need it
