"""The model file round-trips, and anything else is refused with a clear sentence."""
import json

import pytest
import torch
from safetensors.torch import save_file

from convnet.errors import CheckpointError
from convnet.formats import ModelInfo
from convnet.inference.model_file import FORMAT, load_checkpoint, save_model
from convnet.models import create_model


def _info(**kw):
    base = dict(model="spec", model_args={"arch": "c8-b-p-f-d16"}, classes=("cat", "dog", "frog"), in_chans=3,
                input_size=(16, 16), mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), data_source="test",
                metrics={"val_acc": 0.5})
    return ModelInfo(**{**base, **kw})


def test_round_trip_gives_the_same_model_and_metadata(tmp_path):
    info = _info()
    model = create_model("spec", num_classes=3, in_chans=3, input_size=(16, 16), arch="c8-b-p-f-d16")
    with torch.no_grad():  # make BatchNorm's running statistics non-trivial
        model.train()(torch.randn(8, 3, 16, 16) * 3 + 1)
    model.eval()
    save_model(tmp_path / "m.safetensors", model, info)
    clf = load_checkpoint(tmp_path / "m.safetensors")
    assert clf.info == info
    images = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8)
    # The reference normalizes by hand, independently of the engine's function.
    x = ((images.double() / 255 - torch.tensor(info.mean).view(1, 3, 1, 1).double())
         / torch.tensor(info.std).view(1, 3, 1, 1).double())
    expected = torch.softmax(model.double()(x), 1)
    assert torch.allclose(clf.predict(images).double(), expected, atol=1e-5)
    assert not list(tmp_path.glob("*.tmp")), "no temporary file left behind"


def test_a_run_folder_is_accepted_in_place_of_the_file(tmp_path):
    save_model(tmp_path / "model.safetensors",
               create_model("spec", num_classes=3, input_size=(16, 16), arch="c8-b-p-f-d16"), _info())
    assert load_checkpoint(tmp_path).classes == ("cat", "dog", "frog")


@pytest.mark.parametrize("kind", ["missing", "garbage", "foreign", "truncated"])
def test_bad_model_files_give_one_clear_sentence(tmp_path, kind):
    path = tmp_path / "model.safetensors"
    if kind == "garbage":
        path.write_bytes(b"this is not a safetensors file at all")
    elif kind == "foreign":
        save_file({"w": torch.zeros(3)}, str(path), metadata={"format": "pt"})
    elif kind == "truncated":
        save_model(path, create_model("tutorial"), _info(model="tutorial", model_args={}, input_size=(32, 32)))
        path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    message = str(e.value)
    assert str(path) in message and message.endswith(".") and "\n" not in message


def test_metadata_is_plain_json_with_the_documented_keys(tmp_path):
    from safetensors import safe_open

    save_model(tmp_path / "m.safetensors", create_model("tutorial"),
               _info(model="tutorial", model_args={}, input_size=(32, 32)))
    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == FORMAT
    assert set(json.loads(meta["convnet"])) >= {"model", "model_args", "classes", "in_chans", "input_size", "mean",
                                                "std", "data_source", "metrics"}


def test_a_resnet_file_of_96_to_127_pixel_images_from_before_the_imagenet_stem_started_at_96_still_loads(tmp_path):
    # Such a file says stem "auto" (now the ImageNet stem at that size) but holds the CIFAR stem's weights.
    model = create_model("resnet", num_classes=3, in_chans=3, input_size=(96, 96), depth=9, width=8,
                         stem="cifar").eval()
    save_model(tmp_path / "old.safetensors", model,
               _info(model="resnet", model_args={"depth": 9, "width": 8}, input_size=(96, 96)))
    clf = load_checkpoint(tmp_path / "old.safetensors")
    assert clf.info.model_args == {"depth": 9, "width": 8, "stem": "cifar"}
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(clf.model(x), model(x))
    # A file written now at that size holds the ImageNet stem and loads as one.
    new = create_model("resnet", num_classes=3, in_chans=3, input_size=(96, 96), depth=9, width=8).eval()
    save_model(tmp_path / "new.safetensors", new,
               _info(model="resnet", model_args={"depth": 9, "width": 8}, input_size=(96, 96)))
    assert load_checkpoint(tmp_path / "new.safetensors").info.model_args["stem"] == "imagenet"
