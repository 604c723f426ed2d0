"""What convnet refuses in a model file, and how: the catalog for `.safetensors` models.

Every case starts from a model file written by a real training run, rewrites it with one
defect, and asks both readers: `convnet predict` must exit 2 with one line `error: ...` that
names the problem (never a traceback, never NaN output), and the NumPy engine's
`load_model_file` must raise `CheckpointError` naming it too.
"""
from __future__ import annotations

import json
import math
import pickle
import struct
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.numpy import save_file
from safetensors.torch import save_file as save_torch_file

import convnet
from convnet.cli import main
from convnet.errors import CheckpointError
from convnet.formats import MAX_MODEL_BYTES, MODEL_FORMAT, MODEL_INFO_KEYS, ModelInfo
from convnet.scratch import load_model_file
from tests.helpers import write_colour_folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """One real run (tutorial network, 3 colour classes, 24x24, 1 epoch): its tensors, metadata and an image."""
    root = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as mp:  # the suite's per-test CONVNET_HOME is not there for module fixtures
        mp.setenv("CONVNET_HOME", str(root / "home"))
        data = write_colour_folder(root / "data", per_class=10)
        run = convnet.train(convnet.TrainConfig(data=str(data), epochs=1, runs_dir=str(root / "runs"), name="r"),
                            progress=False)
    from safetensors import safe_open

    with safe_open(str(run.run_dir / "model.safetensors"), framework="np") as f:
        tensors = {name: f.get_tensor(name) for name in f.keys()}
        info = json.loads(f.metadata()["convnet"])
    image = root / "red.png"
    Image.fromarray(np.full((24, 24, 3), (230, 20, 20), np.uint8)).save(image)
    return {"tensors": tensors, "info": info, "image": image}


def _write(path: Path, tensors: dict, info: dict | None = None, convnet_json: str | None = None, **metadata) -> Path:
    """A model file as `save_model` writes it, from NumPy arrays; `convnet_json` replaces the metadata text."""
    meta = {"format": MODEL_FORMAT, "convnet": convnet_json if convnet_json is not None else json.dumps(info)}
    save_file(tensors, str(path), metadata={**meta, **metadata})
    return path


def _with(info: dict, **changes) -> dict:
    return {**info, **changes}


def _without(info: dict, key: str) -> dict:
    return {k: v for k, v in info.items() if k != key}


def _changed_tensor(tensors: dict, name: str, value) -> dict:
    return {**tensors, name: value}


class _Payload:
    """Unpickling this creates the marker file: the proof that code from the file ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _header(json_header: dict, data: bytes) -> bytes:
    text = json.dumps(json_header).encode()
    return struct.pack("<Q", len(text)) + text + data


# Each case: (id, make(path, tensors, info, marker) -> None, words the message must contain).
# The metadata cases.
METADATA = [
    ("missing key", lambda p, t, i, m: _write(p, t, _without(i, "mean")), ["without 'mean'"]),
    ("missing keys", lambda p, t, i, m: _write(p, t, _without(_without(i, "classes"), "std")), ["'classes'", "'std'"]),
    ("extra key", lambda p, t, i, m: _write(p, t, _with(i, colour="red")), ["unknown keys", "colour"]),
    ("model not a string", lambda p, t, i, m: _write(p, t, _with(i, model=3)), ["'model'"]),
    ("empty model name", lambda p, t, i, m: _write(p, t, _with(i, model="")), ["'model'"]),
    ("model_args not an object", lambda p, t, i, m: _write(p, t, _with(i, model_args=["arch"])), ["'model_args'"]),
    ("model_args nested object", lambda p, t, i, m: _write(p, t, _with(i, model_args={"arch": {"x": 1}})),
     ["'model_args'"]),
    ("empty class list", lambda p, t, i, m: _write(p, t, _with(i, classes=[])), ["'classes'", "non-empty"]),
    ("duplicate classes", lambda p, t, i, m: _write(p, t, _with(i, classes=["red", "red", "blue"])),
     ["'classes'", "distinct"]),
    ("classes not strings", lambda p, t, i, m: _write(p, t, _with(i, classes=[1, 2, 3])), ["'classes'"]),
    ("empty class name", lambda p, t, i, m: _write(p, t, _with(i, classes=["red", "", "blue"])), ["'classes'"]),
    ("in_chans a bool", lambda p, t, i, m: _write(p, t, _with(i, in_chans=True)), ["'in_chans'"]),
    ("in_chans 2", lambda p, t, i, m: _write(p, t, _with(i, in_chans=2)), ["'in_chans'"]),
    ("in_chans a float", lambda p, t, i, m: _write(p, t, _with(i, in_chans=3.0)), ["'in_chans'"]),
    ("input_size zero", lambda p, t, i, m: _write(p, t, _with(i, input_size=[0, 24])), ["'input_size'"]),
    ("input_size huge", lambda p, t, i, m: _write(p, t, _with(i, input_size=[100000, 100000])),
     ["'input_size'", "4096"]),
    ("input_size of three", lambda p, t, i, m: _write(p, t, _with(i, input_size=[24, 24, 3])), ["'input_size'"]),
    ("mean wrongly sized", lambda p, t, i, m: _write(p, t, _with(i, mean=[0.5, 0.5])), ["'mean'", "one per channel"]),
    ("mean NaN", lambda p, t, i, m: _write(p, t, _with(i, mean=[math.nan, 0.0, 0.0])), ["'mean'", "finite"]),
    ("std zero", lambda p, t, i, m: _write(p, t, _with(i, std=[1.0, 0.0, 1.0])), ["'std'", "positive"]),
    ("std infinite", lambda p, t, i, m: _write(p, t, _with(i, std=[1.0, math.inf, 1.0])), ["'std'"]),
    ("std a string", lambda p, t, i, m: _write(p, t, _with(i, std="1")), ["'std'"]),
    ("data_source not a string", lambda p, t, i, m: _write(p, t, _with(i, data_source=5)), ["'data_source'"]),
    ("metrics not an object", lambda p, t, i, m: _write(p, t, _with(i, metrics=[])), ["'metrics'"]),
    ("metadata not an object", lambda p, t, i, m: _write(p, t, convnet_json="[]"), ["not a JSON object"]),
    ("metadata not JSON", lambda p, t, i, m: _write(p, t, convnet_json='{"model": '), ["damaged"]),
    ("key given twice", lambda p, t, i, m: _write(p, t, convnet_json='{"model": "spec", ' + json.dumps(i)[1:]),
     ["damaged", "twice"]),
    ("metadata nested deep", lambda p, t, i, m: _write(p, t, convnet_json="[" * 100_000), ["nested"]),
    ("no format tag", lambda p, t, i, m: save_file(t, str(p), metadata={"convnet": json.dumps(i)}),
     ["not a convnet model"]),
]

# The tensor cases that the file alone decides (dtype, finiteness).
TENSORS = [
    ("half-precision weight",
     lambda p, t, i, m: _write(p, _changed_tensor(t, "layers.0.weight", t["layers.0.weight"].astype(np.float16)), i),
     ["layers.0.weight", "F16"]),
    ("float64 weight",
     lambda p, t, i, m: _write(p, _changed_tensor(t, "layers.3.bias", t["layers.3.bias"].astype(np.float64)), i),
     ["layers.3.bias", "F64"]),
    (
        "bfloat16 weights",
        lambda p, t, i, m: save_torch_file(
            {k: torch.from_numpy(v).to(torch.bfloat16) for k, v in t.items()}, str(p),
            metadata={"format": MODEL_FORMAT, "convnet": json.dumps(i)}
        ),
        ["BF16"],
    ),
    ("integer weight",
     lambda p, t, i, m: _write(p, _changed_tensor(t, "layers.0.bias", t["layers.0.bias"].astype(np.int64)), i),
     ["layers.0.bias", "I64"]),
    ("NaN weight",
     lambda p, t, i, m: _write(p, _changed_tensor(t, "layers.11.weight", np.full_like(t["layers.11.weight"], np.nan)),
                               i),
     ["layers.11.weight", "NaN"]),
    ("infinite bias",
     lambda p, t, i, m: _write(p, _changed_tensor(t, "layers.0.bias", np.full_like(t["layers.0.bias"], np.inf)), i),
     ["layers.0.bias", "infinite"]),
]

# Files that are not safetensors at all, or lie about their size.
BYTES = [
    ("not safetensors", lambda p, t, i, m: p.write_text("this is a text file, not a model\n"),
     ["not a readable safetensors"]),
    ("zero bytes", lambda p, t, i, m: p.write_bytes(b""), ["not a readable safetensors"]),
    ("truncated header",
     lambda p, t, i, m: p.write_bytes(_header({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}},
                                              b"\0" * 4)[:20]),
     ["not a readable safetensors"]),
    ("header length beyond the file", lambda p, t, i, m: p.write_bytes(struct.pack("<Q", 10**12) + b"{}"),
     ["not a readable safetensors"]),
    (
        "header claims 40 GB of data",
        lambda p, t, i, m: p.write_bytes(_header({"w": {"dtype": "F32", "shape": [100000, 100000],
                                                        "data_offsets": [0, 40_000_000_000]}}, b"\0" * 16)),
        ["not a readable safetensors"],
    ),
    ("larger than the limit", lambda p, t, i, m: _sparse(p, MAX_MODEL_BYTES + 1), ["larger than"]),
    ("pickle with a payload", lambda p, t, i, m: p.write_bytes(pickle.dumps({"w": _Payload(m)})),
     ["not a readable safetensors"]),
    ("torch.save with a payload", lambda p, t, i, m: torch.save({"w": _Payload(m)}, p), ["not a readable safetensors"]),
]

# Cases that need the model built from the metadata: both engines build it (torch on the meta
# device, so nothing is allocated) and compare its shapes with the file's through
# `formats.check_weights_match`.
BUILT = [
    ("unknown model", lambda p, t, i, m: _write(p, t, _with(i, model="nope")), ["nope"]),
    ("unknown model argument", lambda p, t, i, m: _write(p, t, _with(i, model_args={"colour": 1})), ["colour"]),
    ("mistyped model argument", lambda p, t, i, m: _write(p, t, _with(i, model="spec", model_args={"arch": 5})),
     ["arch"]),
    ("class count vs head", lambda p, t, i, m: _write(p, t, _with(i, classes=["red", "green", "blue", "white"])),
     ["4 classes", "layers.11.weight"]),
    ("channel count vs weights", lambda p, t, i, m: _write(p, t, _with(i, in_chans=1, mean=[0.5], std=[0.25])),
     ["in_chans=1", "layers.0.weight"]),
    ("input size vs weights", lambda p, t, i, m: _write(p, t, _with(i, input_size=[32, 32])),
     ["layers.9.weight", "input size"]),
    ("missing tensor", lambda p, t, i, m: _write(p, {k: v for k, v in t.items() if k != "layers.11.bias"}, i),
     ["layers.11.bias"]),
    ("unexpected tensor", lambda p, t, i, m: _write(p, {**t, "extra.weight": np.zeros(3, np.float32)}, i),
     ["extra.weight"]),
    ("mis-shaped tensor",
     lambda p, t, i, m: _write(p, _changed_tensor(t, "layers.3.weight", np.zeros((64, 32, 5, 5), np.float32)), i),
     ["layers.3.weight"]),
    # A spec whose weights would take 360 GB: refused from the shapes, before anything is allocated.
    ("hostile arch", lambda p, t, i, m: _write(p, t, _with(i, model="spec", model_args={"arch": "c100000-c100000"})),
     ["'spec'"]),
]


def _sparse(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)  # no data blocks: the file claims the size, the disk holds nothing


def _cases() -> list:
    return [pytest.param(*case[1:], id=case[0]) for case in METADATA + TENSORS + BYTES + BUILT]


def _defective(tmp_path: Path, trained: dict, make) -> tuple[Path, Path]:
    path, marker = tmp_path / "model.safetensors", tmp_path / "code-ran"
    make(path, dict(trained["tensors"]), dict(trained["info"]), marker)
    return path, marker


@pytest.mark.parametrize("make, words", _cases())
def test_predict_refuses_the_file_in_one_sentence(tmp_path, trained, capsys, make, words):
    path, marker = _defective(tmp_path, trained, make)
    status = main(["predict", str(path), str(trained["image"])])
    out, err = capsys.readouterr()
    assert status == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and err.rstrip().endswith("."), err
    assert all(w in err for w in words), err
    assert not marker.exists(), "code from the file ran"


@pytest.mark.parametrize("make, words", _cases())
def test_the_numpy_engine_refuses_the_file_in_one_sentence(tmp_path, trained, make, words):
    path, marker = _defective(tmp_path, trained, make)
    with pytest.raises(CheckpointError) as e:
        load_model_file(path)
    message = str(e.value)
    assert "\n" not in message and message.endswith("."), message
    assert all(w in message for w in words), message
    assert not marker.exists(), "code from the file ran"


def test_the_rewritten_file_is_accepted_when_nothing_is_wrong(tmp_path, trained, capsys):
    """The cases' defects are theirs alone: the same rewrite without one predicts normally."""
    path = _write(tmp_path / "model.safetensors", trained["tensors"], trained["info"])
    assert main(["predict", str(path), str(trained["image"])]) == 0
    assert capsys.readouterr().out.startswith(f"{trained['image']}: ")
    net, info = load_model_file(path)
    assert info == trained["info"]


def test_the_checked_keys_are_the_documented_ones():
    assert MODEL_INFO_KEYS == tuple(f.name for f in fields(ModelInfo))
