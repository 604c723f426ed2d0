"""What convnet refuses in a training configuration, and how: every TrainConfig field, and config.json.

BAD_VALUES lists, for every field of TrainConfig, values it must refuse (a wrong type, a bool
where a number is due, NaN, infinity, out of range, an unknown choice); a field added without
an entry here fails `test_every_field_has_bad_values`. Each value is refused three ways, each
with one sentence naming the field: building the TrainConfig (ConfigError), an edited config.json
read by `train --resume`, and the same read by `evaluate MODEL --split val` from the model's run
folder. Then config.json as a file (not an object, not UTF-8, huge, a FIFO...), and every recipe
round-tripping through JSON.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from pathlib import Path

import pytest

import convnet
from convnet.data.augment import AugmentConfig
from convnet.errors import ConfigError
from convnet.training.config import MAX_NAME_LENGTH, TrainConfig
from convnet.training.recipes import RECIPES
from tests.helpers import write_colour_folder
from tests.refusals.conftest import assert_one_sentence

NAN, INF = math.nan, math.inf

# field -> values TrainConfig must refuse. JSON-representable (NaN and Infinity included), so the
# same table is written into config.json; lists stand for tuples as JSON has them.
BAD_VALUES: dict[str, list] = {
    "data": ["", 5, "a\0b", ["cifar10"]],
    "val_split": [NAN, INF, -0.1, 1.0, "0.1", True],
    "limit": [0, -1, 1.5, "10", True],
    "image_size": [[0, 8], [8], [8, 8, 8], [5000, 8], "32", [8.0, 8], [True, 8]],
    "channels": [2, 0, "3", True, 3.0],
    "normalize": ["zz", "", None, 1],
    "stream": [0, 1, "true", None],
    "memory_budget_mb": [0, -1, 1.5, "100", True, NAN],
    "loader_workers": [-1, 257, 1.5, "2", True, None],
    "model": ["nope", "", None, 3],
    "model_args": ["arch", [1], {"a b": 1}, {"1x": 1}, {"x": NAN}, {"x": {"y": 1}}],
    "epochs": [0, -1, 1.5, "2", True, 100_001, NAN],
    "time_budget": [0, 0.0, -1.0, "8m", True, NAN, INF, 31 * 24 * 3600.0],
    "last_epoch_steps": [-1, 1.5, "3", True, None, 10**9 + 1, NAN],
    "batch_size": [0, -1, 2.0, None, True, 10**7],
    "optimizer": ["adamw", "", None],
    "lr": [0.0, -1e-3, NAN, INF, "0.001", True, None],
    "momentum": [-0.1, 1.0, NAN, "0.9"],
    "weight_decay": [-1.0, NAN, INF, "0"],
    "bias_lr_scale": [0.0, -1.0, NAN, INF],
    "muon_lr": [0.0, -1, NAN, INF],
    "muon_momentum": [1.0, -0.5, NAN],
    "bias_decay": [0, 1, "true", None],
    "whiten_bias_epochs": [-1, 1.5, "3", True, None, 100_001, NAN],
    "schedule": ["cosine", "", None],
    "warmup_epochs": [-1.0, NAN, INF, "1"],
    "label_smoothing": [-0.1, 1.0, NAN],
    "ema": [-0.1, 1.0, NAN, INF],
    "augment": ["flip", None, [1]],
    "precision": ["fp16", "", None],
    "channels_last": [0, 1, "yes", None],
    "compile": [0, "false", None],
    "device": ["gpu", "cuda:0", "", None],
    "eval_batch_size": [0, -1, 1.5, True],
    "tta": [3, -1, "1", True, None, 1.0],
    "engine": ["numpy", "", None],
    "seed": [-1, 2**32, 1.5, "0", True, None],
    "recipe": ["", 5, None],
    "runs_dir": ["", None, 5, "a\0b"],
    "sync_bn": [0, "true", None],
    "dist_backend": ["mpi", "", None],
    "name": ["", "a/b", "a\\b", "..", ".", "-x", "x" * (MAX_NAME_LENGTH + 1), "a\nb", 5],
}

# augment's own keys, inside config.json (TrainConfig itself takes an AugmentConfig, refused above as anything else)
BAD_AUGMENT = {"flip": ["sideways", "", None, 1], "translate": [-1, 1.5, "2", True, NAN], "cutout": [-1, "8", 2**31],
               "flip_seed": [-1, True, 0.5]}


def table(bad: dict[str, list]) -> list:
    """One pytest.param per (field, value), each id `field=value`."""
    found = []
    for field, values in bad.items():
        for value in values:
            text = repr(value)
            found.append(pytest.param(field, value, id=f"{field}={text if len(text) <= 24 else text[:21] + '...'}"))
    return found


FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}
# the table may run ahead of src by a field
CASES = table({field: values for field, values in BAD_VALUES.items() if field in FIELDS})
AUGMENT_CASES = table(BAD_AUGMENT)


def test_every_field_has_bad_values():
    assert FIELDS <= set(BAD_VALUES), f"fields without bad values: {sorted(FIELDS - set(BAD_VALUES))}"
    assert set(BAD_AUGMENT) == {f.name for f in dataclasses.fields(AugmentConfig)}


def _python(field: str, value):
    """The value as Python code would pass it: JSON's lists of whole numbers are image_size tuples."""
    return tuple(value) if field == "image_size" and isinstance(value, list) else value


@pytest.mark.parametrize(("field", "value"), CASES)
def test_trainconfig_refuses_a_bad_value_naming_its_field(field, value):
    with pytest.raises(ConfigError) as refused:
        TrainConfig(**{field: _python(field, value)})
    assert f"config field {field}" in str(refused.value)
    assert "\n" not in str(refused.value)


# --- the same values in an edited config.json ------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A finished 1-epoch run (spec network, 8x8 colour folder with a carved val split): its config.json is what the
    cases edit."""
    root = tmp_path_factory.mktemp("config_run")
    with pytest.MonkeyPatch.context() as mp:  # the suite's per-test CONVNET_HOME is not there for module fixtures
        mp.setenv("CONVNET_HOME", str(root / "home"))
        data = write_colour_folder(root / "data", per_class=6, size=8)
        config = TrainConfig(data=str(data), model="spec", model_args={"arch": "c4-p-f-d8"}, epochs=1, batch_size=8,
                             val_split=0.25, device="cpu", runs_dir=str(root / "runs"), name="r")
        return convnet.train(config, progress=False).run_dir


@pytest.fixture
def run(tiny_run, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


def edit_config(run: Path, field: str, value, nested: str | None = None) -> None:
    path = run / "config.json"
    config = json.loads(path.read_text())
    if nested:
        config[field] = {**config[field], nested: value}
    else:
        config[field] = value
    path.write_text(json.dumps(config, indent=2))  # NaN and Infinity as Python's json writes and reads them


def snapshot(folder: Path) -> dict[str, bytes]:
    # is_file: a FIFO is never opened
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


READERS = {
    "train --resume RUN": lambda run: ("train", "--resume", run, "--quiet"),
    "evaluate MODEL --split val": lambda run: ("evaluate", run / "model.safetensors", "--split", "val"),
}


def assert_config_refused(run: Path, reader: str, convnet, *fragments: str) -> None:
    before = snapshot(run)
    result = convnet(*READERS[reader](run))
    assert result.status == 2, result
    assert_one_sentence(result.err, "error: ", *fragments)
    assert snapshot(run) == before, "a refused config changed the run folder"


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize(("field", "value"), CASES)
def test_an_edited_config_json_is_refused_naming_file_and_field(field, value, reader, run, convnet):
    edit_config(run, field, value)
    assert_config_refused(run, reader, convnet, "config.json", field)


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize(("key", "value"), AUGMENT_CASES)
def test_a_bad_augment_key_in_config_json_is_refused(key, value, reader, run, convnet):
    edit_config(run, "augment", value, nested=key)
    assert_config_refused(run, reader, convnet, "config.json", key.split("_")[0])


def _replace_text(text: str | bytes):
    def write(run: Path) -> None:
        path = run / "config.json"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())

    return write


def _fields(**changes):
    def write(run: Path) -> None:
        path = run / "config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))

    return write


def _fifo(run: Path) -> None:
    (run / "config.json").unlink()
    os.mkfifo(run / "config.json")


def _huge(run: Path) -> None:
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "recipe": "x" * 1_100_000}))


# case -> (how config.json is damaged, what the one sentence says)
FILE_CASES = {
    "a list": (_replace_text("[1, 2]"), "JSON object"),
    "a string": (_replace_text('"epochs=2"'), "JSON object"),
    "a number": (_replace_text("3"), "JSON object"),
    "null": (_replace_text("null"), "JSON object"),
    "empty": (_replace_text(""), "not valid JSON"),
    "cut off": (_replace_text('{"epochs": 2, "data": '), "not valid JSON"),
    "not UTF-8": (_replace_text(b'{"data": "\xff\xfe"}'), "not valid JSON"),
    "lists nested 100000 deep": (_replace_text("[" * 100_000 + "]" * 100_000), "not valid JSON"),
    "over 1 MB": (_huge, "larger than any config"),
    "an unknown top-level field": (_fields(learning_rate=0.1), "unknown fields ['learning_rate']"),
    "an unknown augment key": (
        _fields(augment={"flip": "none", "translate": 0, "cutout": 0, "flip_seed": 0, "mixup": 1}),
        "unknown fields ['mixup']"),
    "augment not an object": (_fields(augment="flip"), "augment"),
    "a FIFO": (_fifo, "config.json"),  # never opened: it would block
}


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize("case", list(FILE_CASES))
def test_a_damaged_config_json_is_one_sentence(case, reader, run, convnet):
    damage, fragment = FILE_CASES[case]
    damage(run)
    assert_config_refused(run, reader, convnet, fragment)


@pytest.mark.parametrize("name", list(RECIPES))
def test_every_recipe_round_trips_through_json(name):
    config = RECIPES[name]
    again = TrainConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config


def test_a_tuple_model_argument_round_trips_through_json():
    config = TrainConfig(model="airnet", model_args={"widths": (8, 16), "nested": [(1, 2)]})  # JSON has lists only
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
