"""What convnet refuses in a resume state, and how: the catalog for `train --resume RUN`.

Every case starts from a real run folder (one epoch of two finished, so resuming has work to
do), replaces its resume state with a hostile or damaged one, and resumes through the CLI:
exit status 2, one line `error: ...`, no marker file from a pickle payload, and every file of
the run byte-identical afterwards. The last tests resume genuine runs, one written by this
version and one by the version before the state file (fixtures/old_run), and compare them
bitwise with an uninterrupted run.
"""
from __future__ import annotations

import copy
import csv
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import convnet
from convnet.cli import main
from convnet.inference.runtime import bf16_supported
from convnet.training.state_file import STATE_FORMAT
from tests.helpers import write_colour_folder
from tests.refusals.conftest import Payload, assert_one_sentence

OLD_RUN = Path(__file__).parent / "fixtures" / "old_run"  # written by convnet at 02db7c8 (see its README.md)
# The old run's settings: a tiny spec network on 8x8 images, so every resume here takes well under a second.
TINY = dict(model="spec", model_args={"arch": "c4-p-f-d8"}, batch_size=8, val_split=0.25, device="cpu")


def tiny_data(root: Path) -> Path:
    """The colour folder fixtures/old_run was trained on."""
    return write_colour_folder(root, per_class=8, size=8, seed=0)


@pytest.fixture(scope="module")
def half_run(tmp_path_factory) -> Path:
    """A run written by this version: 1 epoch trained, config.json then asking for 2."""
    root = tmp_path_factory.mktemp("half_run")
    with pytest.MonkeyPatch.context() as mp:  # the suite's per-test CONVNET_HOME is not there for module fixtures
        mp.setenv("CONVNET_HOME", str(root / "home"))
        config = convnet.TrainConfig(data=str(tiny_data(root / "data")), epochs=1, runs_dir=str(root / "runs"),
                                     name="half", **TINY)
        run = convnet.train(config, progress=False).run_dir
    set_config(run, epochs=2)
    return run


@pytest.fixture
def run(half_run, tmp_path) -> Path:
    """A private copy of `half_run` for one case to damage."""
    return Path(shutil.copytree(half_run, tmp_path / "run"))


def set_config(run: Path, **fields) -> None:
    path = run / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}, indent=2))


def history_rows(run: Path) -> list[dict]:
    """history.csv as text rows, without the timing columns (which differ between any two runs)."""
    with open(run / "history.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k not in ("seconds", "images_per_s")} for row in csv.DictReader(f)]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def assert_resume_refused(run: Path, convnet, *fragments: str) -> None:
    """`train --resume` exits 2 with one sentence and leaves every file of the run as it was."""
    before = snapshot(run)
    result = convnet("train", "--resume", run, "--quiet")
    assert result.status == 2, result
    assert_one_sentence(result.err, "error: ", *fragments)
    assert snapshot(run) == before, "a refused resume changed the run folder"


# --- hostile pickles: never unpickled with code ---------------------------------------------


class TouchPayload:
    """Unpickling this calls Path.touch(marker): code from the file, without a shell."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _real_state(run: Path) -> dict:
    from convnet.training.state_file import read_state

    return read_state(run / "state.safetensors")


def _as_state_pt(write):
    """A legacy state.pt written by `write(path, marker)`, the state.safetensors gone (so state.pt is what
    --resume reads)."""

    def place(run: Path, marker: Path) -> None:
        state = _real_state(run)
        (run / "state.safetensors").unlink()
        write(run / "state.pt", marker, state)

    return place


def _as_state_safetensors(write):
    """The hostile bytes renamed state.safetensors."""

    def place(run: Path, marker: Path) -> None:
        write(run / "state.safetensors", marker, _real_state(run))

    return place


def _raw_pickle(payload):
    return lambda path, marker, state: path.write_bytes(pickle.dumps(payload(marker)))


def _torch_save(payload):
    return lambda path, marker, state: torch.save(payload(marker), path)


def _state_with_payload_in_history(path, marker, state):
    torch.save({**state, "history": [*state["history"], Payload(marker)]}, path)


def _state_with_payload_as_optimizer(path, marker, state):
    torch.save({**state, "optimizer": TouchPayload(marker)}, path)


# case -> (how to place it, what the one sentence says)
HOSTILE = {
    "state.pt: raw pickle, os.system payload": (_as_state_pt(_raw_pickle(Payload)), "cannot be read safely"),
    "state.pt: raw pickle, Path.touch payload": (_as_state_pt(_raw_pickle(TouchPayload)), "cannot be read safely"),
    "state.pt: torch.save of a payload": (_as_state_pt(_torch_save(Payload)), "cannot be read safely"),
    "state.pt: torch.save of a real state, payload in its history": (
        _as_state_pt(_state_with_payload_in_history), "cannot be read safely"),
    "state.pt: torch.save of a real state, payload as its optimizer": (
        _as_state_pt(_state_with_payload_as_optimizer), "cannot be read safely"),
    "state.safetensors: a raw pickle renamed": (
        _as_state_safetensors(_raw_pickle(Payload)), "not a readable state file"),
    "state.safetensors: a torch.save file renamed": (
        _as_state_safetensors(_torch_save(TouchPayload)), "not a readable state file"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_pickle_in_the_resume_state_never_runs(case, run, marker, convnet, recwarn):
    place, fragment = HOSTILE[case]
    place(run, marker)
    assert_resume_refused(run, convnet, fragment)
    assert not marker.exists()
    # a warning line (torch's about a pickle protocol) would stand above the sentence
    assert [str(w.message) for w in recwarn] == []


# --- damaged or tampered state.safetensors ---------------------------------------------------


def _read(path: Path) -> tuple[dict, dict]:
    """(the decoded-state skeleton, the tensors) of a state file."""
    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["convnet"]), {name: f.get_tensor(name) for name in f.keys()}


def _fields(skeleton: dict) -> dict:
    """The top-level {"$dict": [[key, value], ...]} as a dict whose values are the skeleton's own (edits go through)."""
    return dict(skeleton["$dict"])


def _set(skeleton: dict, key: str, value) -> None:
    skeleton["$dict"] = [[k, value if k == key else v] for k, v in skeleton["$dict"]]


def _adam_group(skeleton: dict) -> dict:
    return _fields(_fields(skeleton)["optimizer"])["param_groups"][0]


def _rewrite(skeleton_edit=None, tensor_edit=None, metadata=None):
    """A case that rewrites state.safetensors: the skeleton edited in place, tensors replaced, or the metadata
    given whole."""

    def apply(path: Path) -> None:
        skeleton, tensors = _read(path)
        skeleton = copy.deepcopy(skeleton)
        if skeleton_edit:
            skeleton_edit(skeleton)
        if tensor_edit:
            tensors = {**tensors, **tensor_edit(tensors)}
        meta = metadata if metadata is not None else {"format": STATE_FORMAT, "convnet": json.dumps(skeleton)}
        save_file(tensors, str(path), metadata=meta)

    return apply


def _bytes(make):
    return lambda path: path.write_bytes(make(path.read_bytes()))


def _epoch(epoch: int | str | bool, rows: int | None = None):
    """epoch set to `epoch`; the history repeated or cut to `rows` rows (so only the epoch is wrong)."""

    def edit(skeleton):
        _set(skeleton, "epoch", epoch)
        if rows is not None:
            history = _fields(skeleton)["history"]
            _set(skeleton, "history", (history * rows)[:rows])

    return edit


def _nested(depth: int, inner: str = "1") -> str:
    return '{"$dict": [["epoch", ' * depth + inner + "]]}" * depth


def _history_row(edit):
    return lambda skeleton: edit(_fields(skeleton)["history"][0]["$dict"])


def _group_value(key: str, value):
    def edit(skeleton):
        group = _adam_group(skeleton)
        group["$dict"] = [[k, value if k == key else v] for k, v in group["$dict"]]

    return edit


W = "/model/layers.0.weight"  # the first convolution's filters, (4, 3, 3, 3)
NOT_READABLE, NOT_OURS, DAMAGED, NOT_A_STATE, DOES_NOT_FIT = (
    "not a readable state file", "not a convnet resume state", "damaged state metadata",
    "does not hold a training state", "does not fit")


# case -> (rewrite of state.safetensors, what the one sentence says)
DAMAGED_STATES = {
    # the file
    "zero bytes": (_bytes(lambda b: b""), NOT_READABLE),
    "truncated to half": (_bytes(lambda b: b[: len(b) // 2]), NOT_READABLE),
    "header length larger than the file": (_bytes(lambda b: (2**40).to_bytes(8, "little") + b[8:]), NOT_READABLE),
    "random bytes": (_bytes(lambda b: os.urandom(len(b))), NOT_READABLE),
    # its metadata
    "no metadata": (_rewrite(metadata={}), NOT_OURS),
    "another program's format": (_rewrite(metadata={"format": "pt", "convnet": "{}"}), NOT_OURS),
    "a convnet model file's format": (_rewrite(metadata={"format": "convnet.model/1", "convnet": "{}"}), NOT_OURS),
    "format but no state": (_rewrite(metadata={"format": STATE_FORMAT}), NOT_OURS),
    "state that is not JSON": (_rewrite(metadata={"format": STATE_FORMAT, "convnet": "{'epoch': 1"}), DAMAGED),
    "reference to a missing tensor": (
        _rewrite(lambda s: _fields(_fields(s)["model"])["layers.0.weight"].update({"$tensor": "/nowhere"})), DAMAGED),
    "tensor reference that is a number": (
        _rewrite(lambda s: _fields(_fields(s)["model"])["layers.0.weight"].update({"$tensor": 7})), DAMAGED),
    "$dict that is text": (_rewrite(metadata={"format": STATE_FORMAT, "convnet": '{"$dict": "epoch=1"}'}), DAMAGED),
    "$dict of triples": (
        _rewrite(metadata={"format": STATE_FORMAT, "convnet": '{"$dict": [["epoch", 1, 2]]}'}), DAMAGED),
    "$dict keyed by a list": (
        _rewrite(metadata={"format": STATE_FORMAT, "convnet": '{"$dict": [[["epoch"], 1]]}'}), DAMAGED),
    "object of unknown kind": (
        _rewrite(metadata={"format": STATE_FORMAT, "convnet": '{"$code": "os.system"}'}), DAMAGED),
    "a list, not a state": (_rewrite(metadata={"format": STATE_FORMAT, "convnet": "[1, 2]"}), NOT_A_STATE),
    "a number, not a state": (_rewrite(metadata={"format": STATE_FORMAT, "convnet": "1"}), NOT_A_STATE),
    "lists nested 100000 deep": (
        _rewrite(metadata={"format": STATE_FORMAT, "convnet": "[" * 100_000 + "]" * 100_000}), DAMAGED),
    "$dicts nested 5000 deep": (_rewrite(metadata={"format": STATE_FORMAT, "convnet": _nested(5000)}), DAMAGED),
    # what it holds, against the run's config.json
    "epoch beyond the config's epochs": (_rewrite(_epoch(3, rows=3)), DOES_NOT_FIT),
    "negative epoch": (_rewrite(_epoch(-1, rows=0)), DOES_NOT_FIT),
    "epoch as text": (_rewrite(_epoch("1")), DOES_NOT_FIT),
    "epoch true": (_rewrite(_epoch(True)), DOES_NOT_FIT),
    "epoch without its history row": (_rewrite(_epoch(1, rows=0)), DOES_NOT_FIT),
    "no epoch at all": (
        _rewrite(lambda s: s.update({"$dict": [p for p in s["$dict"] if p[0] != "epoch"]})), DOES_NOT_FIT),
    "epochs all done": (_rewrite(_epoch(2, rows=2)), "already finished its 2 epochs"),
    "history that is a number": (_rewrite(lambda s: _set(s, "history", 5)), DOES_NOT_FIT),
    "filters of the wrong shape": (_rewrite(tensor_edit=lambda t: {W: torch.zeros(8, 3, 3, 3)}), DOES_NOT_FIT),
    "a model tensor missing": (
        _rewrite(lambda s: _fields(s)["model"].update({"$dict": _fields(s)["model"]["$dict"][1:]})), DOES_NOT_FIT),
    "an extra model tensor": (
        _rewrite(lambda s: _fields(s)["model"]["$dict"].append(["extra.weight", {"$tensor": W}])), DOES_NOT_FIT),
    "optimizer with no parameter groups": (
        _rewrite(lambda s: _fields(_fields(s)["optimizer"])["param_groups"].clear()), DOES_NOT_FIT),
    "optimizer that is a number": (_rewrite(lambda s: _set(s, "optimizer", 3)), DOES_NOT_FIT),
    # loadable by torch, but failing later with a traceback or training on from nonsense
    "Adam moment of the wrong shape": (
        _rewrite(tensor_edit=lambda t: {"/optimizer/state/0/exp_avg": torch.zeros(3)}), DOES_NOT_FIT),
    "Adam moment of integers": (
        _rewrite(tensor_edit=lambda t: {"/optimizer/state/0/exp_avg": t["/optimizer/state/0/exp_avg"].long()}),
        DOES_NOT_FIT),
    "Adam step count of two numbers": (
        _rewrite(tensor_edit=lambda t: {"/optimizer/state/0/step": torch.tensor([1.0, 2.0])}), DOES_NOT_FIT),
    "Adam betas as text": (_rewrite(_group_value("betas", "zz")), DOES_NOT_FIT),
    "Adam eps as text": (_rewrite(_group_value("eps", "zz")), DOES_NOT_FIT),
    "Adam amsgrad a list": (_rewrite(_group_value("amsgrad", [1])), DOES_NOT_FIT),
    "history row with an unknown column": (
        _rewrite(_history_row(lambda row: row.append(["evil", 1]))), DOES_NOT_FIT),
    "history value as text": (
        _rewrite(_history_row(lambda row: row.__setitem__(1, ["train_loss", "zz"]))), DOES_NOT_FIT),
}


@pytest.mark.parametrize(("damage", "fragment"), list(DAMAGED_STATES.values()), ids=list(DAMAGED_STATES))
def test_a_damaged_resume_state_is_one_sentence(damage, fragment, run, convnet):
    damage(run / "state.safetensors")
    assert_resume_refused(run, convnet, fragment)


# --- genuine runs resume exactly ------------------------------------------------------------


def _old_run(tmp_path: Path, half_run: Path) -> Path:
    """fixtures/old_run (state.pt from 02db7c8), its colour folder written again and its paths filled in."""
    run = Path(shutil.copytree(OLD_RUN, tmp_path / "old"))
    (run / "README.md").unlink()
    data = tiny_data(tmp_path / "data")
    path = run / "config.json"
    path.write_text(path.read_text().replace("<DATA>", str(data)).replace("<RUNS>", str(tmp_path / "runs")))
    assert (run / "state.pt").is_file() and not (run / "state.safetensors").exists()
    return run


def _this_version_run(tmp_path: Path, half_run: Path) -> Path:
    return Path(shutil.copytree(half_run, tmp_path / "new"))


def made_with_the_old_runs_kernels() -> bool:
    """Whether this machine trains as the one that wrote fixtures/old_run: `precision: auto` in bf16, ATen's
    AVX-512 kernels."""
    return bf16_supported(torch.device("cpu")) and torch.backends.cpu.get_cpu_capability() == "AVX512"


# Where the old run's first epoch was trained in bf16 and this machine trains in fp32 (an AVX2 CPU, or
# ONEDNN_MAX_CPU_ISA=AVX2), no uninterrupted run here can repeat that epoch bitwise. The two then agree to
# within bf16's rounding: measured under the AVX2 restriction, each tensor's relative L2 distance was at
# most 3.9e-3 (bf16 keeps 8 significant bits, 2^-8 = 3.9e-3), where a run with another seed lies 0.5 to 3.6
# away. 2e-2 leaves room for other CPUs and still tells a faithful resume from a restarted or scrambled one.
ACROSS_PRECISIONS_RTOL = 2e-2


def assert_same_weights(resumed: dict, whole: dict, exact: bool) -> None:
    assert resumed.keys() == whole.keys()
    for name in whole:
        if exact:
            assert torch.equal(resumed[name], whole[name]), name
        else:
            a, b = resumed[name].double(), whole[name].double()
            assert (a - b).norm() <= ACROSS_PRECISIONS_RTOL * b.norm(), name


@pytest.mark.parametrize("written_by", [_this_version_run, _old_run],
                         ids=["written by this version", "written at 02db7c8, state.pt"])
def test_a_genuine_run_resumes_exactly_as_an_uninterrupted_one(written_by, half_run, tmp_path):
    run = written_by(tmp_path, half_run)
    exact = written_by is _this_version_run or made_with_the_old_runs_kernels()
    first_epoch = history_rows(run)
    set_config(run, epochs=2)
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    config = json.loads((run / "config.json").read_text())
    whole = convnet.train(convnet.TrainConfig.from_dict({**config, "runs_dir": str(tmp_path / "runs"),
                                                         "name": "whole"}), progress=False).run_dir
    assert_same_weights(load_file(run / "model.safetensors"), load_file(whole / "model.safetensors"), exact)
    resumed_rows, whole_rows = history_rows(run), history_rows(whole)
    assert len(whole_rows) == 2 and resumed_rows[:1] == first_epoch  # the first epoch is kept, not trained again
    if exact:
        assert resumed_rows == whole_rows
    else:
        assert resumed_rows[1].keys() == whole_rows[1].keys()
        for key, want in whole_rows[1].items():  # the second epoch's metrics, to bf16's rounding
            assert float(resumed_rows[1][key]) == pytest.approx(float(want), rel=ACROSS_PRECISIONS_RTOL), key
    # the old state is replaced, not left behind
    assert (run / "state.safetensors").is_file() and not (run / "state.pt").exists()
