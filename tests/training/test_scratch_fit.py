"""`--engine scratch` through the run loop: its run folder, its model file against torch in float64, no resume."""
import csv
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

import convnet
from convnet.cli import main
from convnet.errors import ConvnetError
from tests.helpers import write_colour_folder

ARCH = "c4-p-d8"  # 3x8x8 -conv3-> 4x6x6 -pool-> 4x3x3 -flatten-> 36 -> 8 -> 3 classes


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """ROOT/train (3 x 12 images) and ROOT/val (3 x 4 other images), 8x8 RGB."""
    root = tmp_path_factory.mktemp("scratch_data")
    write_colour_folder(root / "train", per_class=12, size=8, seed=0)
    write_colour_folder(root / "val", per_class=4, size=8, seed=1)
    return root


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    config = convnet.TrainConfig(data=str(data), engine="scratch", model="spec", model_args={"arch": ARCH}, epochs=2,
                                 batch_size=8, lr=1e-2, runs_dir=str(tmp_path_factory.mktemp("runs")), name="s", seed=0)
    return config, convnet.train(config, progress=False)


def _reference_logits(path, x: torch.Tensor) -> torch.Tensor:
    """The network of ARCH written out in torch float64 from the model file's tensors."""
    w = {k: v.double() for k, v in load_file(path).items()}
    x = F.max_pool2d(F.relu(F.conv2d(x, w["layers.0.weight"], w["layers.0.bias"])), 2)
    x = F.relu(F.linear(x.flatten(1), w["layers.4.weight"], w["layers.4.bias"]))
    return F.linear(x, w["layers.6.weight"], w["layers.6.bias"])


def _val_images(data, classes):
    paths = sorted((data / "val").glob("*/*.png"))
    # (N, 3, 8, 8) uint8
    images = torch.stack([torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1) for p in paths])
    return images, torch.tensor([classes.index(p.parent.name) for p in paths])


def test_scratch_run_folder_is_complete(run):
    config, result = run
    assert convnet.TrainConfig.from_dict(json.loads((result.run_dir / "config.json").read_text())) == config
    rows = list(csv.DictReader(open(result.run_dir / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    # It learns: the loss falls, and 12 validation images are counted, above chance (4 of 12).
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])
    assert (round(float(rows[1]["val_acc"]) * 12) == pytest.approx(float(rows[1]["val_acc"]) * 12)
            and float(rows[1]["val_acc"]) > 0.5)
    assert {"model.safetensors", "curves.png", "samples.png"} <= {p.name for p in result.run_dir.iterdir()}


def test_scratch_model_file_matches_torch_float64_and_the_engines_own_validation(run, data):
    _, result = run
    path = result.run_dir / "model.safetensors"
    clf = convnet.load_checkpoint(path)
    images, labels = _val_images(data, clf.classes)
    logits = _reference_logits(path, images.double() / 255)  # normalize "unit": x / 255
    # The file read back by the torch engine computes what the written-out network computes.
    torch.testing.assert_close(clf.predict(images).double(), torch.softmax(logits, 1), rtol=0, atol=1e-5)
    # ... and what the NumPy network computed when it validated after its last epoch (float32,
    # rounded to 6 decimals in history.csv): the weights were carried over, layout included.
    last = list(csv.DictReader(open(result.run_dir / "history.csv")))[-1]
    assert float(last["val_loss"]) == pytest.approx(F.cross_entropy(logits, labels).item(), abs=1e-4)
    assert float(last["val_acc"]) == pytest.approx((logits.argmax(1) == labels).double().mean().item(), abs=1e-5)


def test_a_scratch_run_cannot_be_resumed(run):
    _, result = run
    with pytest.raises(ConvnetError, match="scratch engine cannot be resumed") as e:
        convnet.resume(result.run_dir, progress=False)
    assert "\n" not in str(e.value)


def test_cli_trains_with_the_scratch_engine(data, tmp_path, capsys):
    argv = ["train", "--data", str(data), "--engine", "scratch", "--arch", ARCH, "--epochs", "2", "--batch-size", "8",
            "--runs-dir", str(tmp_path), "--name", "c"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/2", "2/2"] and all("val loss" in line for line in epochs)
    assert any(line.startswith("done: ") for line in lines)
    assert (tmp_path / "c" / "model.safetensors").exists()
