"""The `convnet` command end to end on a tiny real image folder."""
import json
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from convnet import load_checkpoint
from convnet.cli import main
from convnet.models import create_model


@pytest.fixture(scope="module")
def trained(colour_folder, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    assert main(["train", "--data", str(colour_folder), "--epochs", "3", "--batch-size", "16", "--runs-dir", str(runs),
                 "--name", "t", "--quiet"]) == 0
    return runs / "t" / "model.safetensors"


def test_training_ends_with_a_next_command_that_runs(colour_folder, tmp_path, capsys):
    runs = tmp_path / "my runs"  # a space: the printed path must survive a shell
    assert main(["train", "--data", str(colour_folder), "--epochs", "1", "--batch-size", "32", "--runs-dir", str(runs),
                 "--name", "n"]) == 0
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("next: ")]
    argv = shlex.split(line.removeprefix("next: "))
    assert argv[:2] == ["convnet", "evaluate"] and "..." not in line
    assert main([*argv[1:], "--json", "--out", str(tmp_path / "ev")]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 12  # the run's own validation split, found without --data


def test_summary_prints_the_tutorial_total(capsys):
    assert main(["summary", "--model", "tutorial"]) == 0
    out = capsys.readouterr().out
    assert "Total params: 122,570" in out and "(None, 64, 4, 4)" in out


def test_summary_says_why_its_max_pool_comes_before_the_relu(capsys):
    assert main(["summary", "--model", "tutorial"]) == 0
    out = capsys.readouterr().out
    rows = [line.split()[:2] for line in out.splitlines() if line.startswith("layers.")]
    assert rows[1:3] == [["layers.2", "(MaxPool2d)"], ["layers.1", "(ReLU)"]]  # the order the engine runs them
    assert out.rstrip().splitlines()[-3:] == [
        "* MaxPool runs before ReLU here (`convnet explain` shows conv, ReLU, pool): the same result,",
        "  as max(relu(x)) == relu(max(x)), and the ReLU then has fewer values to do",
        "  (32 x 15 x 15 instead of 32 x 30 x 30).",
    ]
    # The claim, in float64: torch's own Sequential runs the layers as stored (conv, ReLU, pool); the model pools first.
    torch.manual_seed(0)
    model = create_model("tutorial", num_classes=10, in_chans=3, input_size=(32, 32)).double().eval()
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert isinstance(model.layers[1], torch.nn.ReLU) and isinstance(model.layers[2], torch.nn.MaxPool2d)
    with torch.no_grad():
        assert torch.equal(model(x), torch.nn.Sequential.forward(model.layers, x))
        y = torch.randn(2, 8, 30, 30, dtype=torch.float64)
        pool = torch.nn.functional.max_pool2d
        assert torch.equal(torch.relu(pool(y, 2)), pool(torch.relu(y), 2))

    assert main(["summary", "--arch", "c8-d4", "--input", "1x8x8"]) == 0  # no pool: no footnote
    assert "MaxPool" not in capsys.readouterr().out


def test_summary_of_a_spec_and_its_errors(capsys):
    assert main(["summary", "--arch", "c16-b-p-d32", "--input", "1x28x28", "--classes", "4"]) == 0
    out = capsys.readouterr().out
    # conv 1->16 (160) + BN (32) + dense 16*13*13 -> 32 (86,560) + out 32 -> 4 (132)
    assert "Total params: 86,884" in out
    assert main(["summary", "--arch", "c16-p-p-p-p-p", "--input", "3x16x16"]) == 2
    err = capsys.readouterr().err
    # 16 -c-> 14 -p-> 7 -p-> 3 -p-> 1 -p-> 0: the fifth layer is the one refused, in one line.
    assert err.startswith("error: Layer 5 'p'") and err.count("\n") == 1


def test_train_evaluate_predict(trained, colour_folder, tmp_path, capsys):
    # The training images with ten red ones filed under green: a model that learnt the colours
    # gets those wrong, so the right accuracy is well above chance (1/3) and below 1.
    data = tmp_path / "mislabelled"
    for path in sorted(colour_folder.glob("*/*.png")):
        cls = "green" if path.parent.name == "red" and int(path.stem) < 10 else path.parent.name
        (data / cls).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, data / cls / f"{path.parent.name}{path.name}")
    capsys.readouterr()
    assert main(["evaluate", str(trained), "--data", str(data), "--json", "--out", str(tmp_path / "ev")]) == 0
    report = json.loads(capsys.readouterr().out)
    # The same accuracy counted here image by image: each PNG read with Pillow, its label the folder it sits in.
    clf = load_checkpoint(trained)
    paths = sorted(data.glob("*/*.png"))
    images = torch.stack([torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1) for p in paths])
    labels = torch.tensor([clf.classes.index(p.parent.name) for p in paths])
    correct = int((clf.predict(images).argmax(1) == labels).sum())
    assert report["n"] == 120 and report["accuracy"] == pytest.approx(correct / 120)
    assert 0.7 * 120 <= correct <= 110
    assert set(report["per_class"]) == {"red", "green", "blue"}
    assert sum(sum(row) for row in report["confusion_matrix"]) == 120
    assert (tmp_path / "ev" / "confusion.png").stat().st_size > 0

    # the run's own carved validation split (10% of 120), rebuilt from config.json
    assert main(["evaluate", str(trained), "--split", "val", "--json", "--out", str(tmp_path / "ev2")]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 12


def test_predict_a_folder_with_a_broken_file(trained, colour_folder, tmp_path, capsys):
    folder = tmp_path / "pics"
    folder.mkdir()
    for i, name in enumerate(["a.png", "b.jpg"]):
        Image.open(colour_folder / "red" / f"{i:03d}.png").convert("RGB").save(folder / name)
    (folder / "c.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    capsys.readouterr()
    assert main(["predict", str(trained), str(folder), "--top-k", "2"]) == 1
    out, err = capsys.readouterr()
    assert len(out.strip().splitlines()) == 2 and all(line.count(",") == 1 for line in out.strip().splitlines())
    assert err.strip().splitlines() == [err.strip()] and "c.jpg" in err

    assert main(["predict", str(trained), str(folder), "--json"]) == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [sorted(x) for x in lines] == [["path", "predictions"], ["path", "predictions"], ["error", "path"]]
    probs = [p["probability"] for p in lines[0]["predictions"]]
    assert (probs == sorted(probs, reverse=True) and len(probs) == 3
            and {p["class"] for p in lines[0]["predictions"]} == {"red", "green", "blue"})


def test_show_data_writes_a_png(colour_folder, tmp_path, capsys):
    assert main(["show-data", "--data", str(colour_folder), "--count", "4", "--out", str(tmp_path / "s.png")]) == 0
    assert Image.open(tmp_path / "s.png").size[0] > 100


def _shown_classes(capsys) -> list[str]:
    return capsys.readouterr().out.splitlines()[0].split(": ", 1)[1].split(", ")


def test_show_data_mixes_classes_unless_asked_for_the_first_files(colour_folder, tmp_path, capsys):
    # The folder is read sorted by class (blue/, green/, red/), as a newcomer's folder is.
    files = sorted(p.parent.name for p in colour_folder.rglob("*.png"))
    argv = ["show-data", "--data", str(colour_folder), "--count", "9", "--out", str(tmp_path / "s.png")]
    assert main([*argv, "--first"]) == 0
    assert _shown_classes(capsys) == files[:9]  # the first nine files: one class only
    assert main(argv) == 0
    shuffled = _shown_classes(capsys)
    assert len(shuffled) == 9 and len(set(shuffled)) >= 2
    assert main([*argv, "--seed", "0"]) == 0 and _shown_classes(capsys) == shuffled  # seeded: repeatable


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["train", "--data", "/no/such/folder", "--quiet"], "/no/such/folder"),
        (["train", "--epochs", "0"], "--epochs"),
        (["evaluate", "/no/model.safetensors"], "No model file"),
        (["predict", "/no/model.safetensors", "x.png"], "No model file"),
        (["show-data", "--data", "sample", "--out", "grid.svg"], ".png"),
    ],
)
def test_bad_input_is_one_clear_sentence_and_exit_2(argv, fragment, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fragment in err and err.count("\n") == 1


def test_unknown_class_in_evaluation_data_is_an_error(trained, tmp_path, capsys):
    other = tmp_path / "other"
    for cls in ("red", "purple"):
        (other / cls).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (24, 24), (200, 0, 200)).save(other / cls / f"{i}.png")
    assert main(["evaluate", str(trained), "--data", str(other)]) == 2
    assert "purple" in capsys.readouterr().err


@pytest.mark.slow
def test_entry_points_run(capsys):
    assert main(["explain"]) == 0
    in_process = capsys.readouterr().out
    for cmd in (["convnet"], [sys.executable, "-m", "convnet"]):
        exe = cmd if cmd[0] != "convnet" else [str(__import__("pathlib").Path(sys.executable).parent / "convnet")]
        out = subprocess.run([*exe, "--help"], capture_output=True, text=True, check=True).stdout
        assert "train" in out and "predict" in out
        failed = subprocess.run([*exe, "train", "--epochs", "0"], capture_output=True, text=True)
        assert failed.returncode == 2 and failed.stderr.startswith("error: ") and "--epochs" in failed.stderr
        # All of a long output reaches a pipe before the process exits.
        assert subprocess.run([*exe, "explain"], capture_output=True, text=True, check=True).stdout == in_process


def test_a_model_argument_with_commas_is_a_list(capsys):
    assert main(["summary", "--model", "airnet", "--model-arg", "widths=8,16,16"]) == 0
    total = capsys.readouterr().out.split("Total params: ")[1].split()[0]
    assert int(total.replace(",", "")) == sum(p.numel()
                                              for p in create_model("airnet", widths=(8, 16, 16)).parameters())
