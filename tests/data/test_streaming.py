"""Folders streamed from disk (data.streaming) against the same folders held in memory."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from convnet.cli import main
from convnet.data import streaming
from convnet.data.augment import AugmentConfig
from convnet.data.batches import InMemoryBatches, StreamingBatches, batch_source
from convnet.data.image_folder import DataWarning, load_image_folder, scan_folder
from convnet.data.streaming import StreamedSplit, open_streamed
from convnet.errors import ConfigError
from convnet.training.config import TrainConfig
from convnet.training.prepare import prepare_data
from convnet.training.train import train

pytestmark = pytest.mark.filterwarnings("ignore::convnet.data.image_folder.DataWarning")


@pytest.fixture(scope="module")
def jpeg_folder(tmp_path_factory):
    """3 classes x 30 noisy 40x36 JPEGs, each class a colour: lossy files, resized on load."""
    root = tmp_path_factory.mktemp("jpegs")
    rng = np.random.default_rng(0)
    for c, colour in enumerate([(200, 40, 40), (40, 200, 40), (40, 40, 200)]):
        (root / f"class{c}").mkdir()
        for i in range(30):
            pixels = np.clip(rng.normal(colour, 40, size=(36, 40, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"class{c}" / f"{i:02d}.jpg", quality=85)
    return root


def _config(data, tmp_path, **kw):
    """Every source of randomness the in-memory path has: order, alternating flips, shifts and cutout."""
    augment = AugmentConfig(flip="alternating", translate=2, cutout=6)
    base = dict(data=str(data), epochs=2, batch_size=16, image_size=(24, 24), normalize="standard", augment=augment,
                lr=3e-3, runs_dir=str(tmp_path / "runs"))
    return TrainConfig(**{**base, **kw})


def test_streamed_split_reads_the_pixels_the_in_memory_path_decodes(jpeg_folder):
    memory = load_image_folder(jpeg_folder, image_size=(20, 16), channels=3)
    streamed = open_streamed(scan_folder(jpeg_folder, image_size=(20, 16), channels=3))
    assert streamed.classes == memory.classes and torch.equal(streamed.labels, memory.labels)
    assert torch.equal(streamed.read(torch.arange(len(streamed))), memory.images)
    pick = torch.tensor([5, 0, 89, 44])
    assert torch.equal(streamed.read(pick), memory.images[pick])


def test_streaming_batches_equal_in_memory_batches(jpeg_folder):
    memory = load_image_folder(jpeg_folder, image_size=(24, 24))
    streamed = open_streamed(scan_folder(jpeg_folder, image_size=(24, 24)))
    a = InMemoryBatches(memory, 16).batches(3, torch.Generator().manual_seed(7))
    b = StreamingBatches(streamed, 16, workers=2).batches(3, torch.Generator().manual_seed(7))
    n = 0
    for (ia, xa, ya), (ib, xb, yb) in zip(a, b, strict=True):
        assert torch.equal(ia, ib) and torch.equal(xa, xb) and torch.equal(ya, yb)
        n += len(ia)
    assert n == len(memory)


def test_a_rank_reads_only_its_slice_of_each_global_batch(jpeg_folder):
    streamed = open_streamed(scan_folder(jpeg_folder, image_size=(24, 24)))
    source = StreamingBatches(streamed, 16, workers=0, part=lambda n: slice(n // 2, n))
    for idx, images, _ in source.batches(0, torch.Generator().manual_seed(1)):
        half = len(idx) // 2
        assert torch.equal(images[half:], streamed.read(idx[half:]))
        assert not images[:half].any()  # another rank's images: never read here


@pytest.mark.slow  # two runs of two epochs, the streamed one with two loader worker processes
def test_streamed_run_trains_like_the_in_memory_run(jpeg_folder, tmp_path):
    """Same permutation, pixels, augmentation, dropout and statistics: the same losses, bitwise."""
    memory = train(_config(jpeg_folder, tmp_path, name="memory", val_split=0.2), progress=False)
    streamed = train(_config(jpeg_folder, tmp_path, name="streamed", val_split=0.2, stream=True, loader_workers=2),
                     progress=False)
    for a, b in zip(memory.history, streamed.history, strict=True):
        assert ({k: v for k, v in a.items() if k not in ("seconds", "images_per_s")}
                == {k: v for k, v in b.items() if k not in ("seconds", "images_per_s")})
    assert (streamed.run_dir / "samples.png").is_file()


def test_evaluate_of_a_streamed_run_scores_its_split_as_the_in_memory_run_does(jpeg_folder, tmp_path, capsys):
    memory = train(_config(jpeg_folder, tmp_path, name="memory", val_split=0.2, epochs=1), progress=False)
    streamed = train(_config(jpeg_folder, tmp_path, name="streamed", val_split=0.2, epochs=1, stream=True),
                     progress=False)
    reports = []
    for run in (memory, streamed):
        assert main(["evaluate", str(run.run_dir / "model.safetensors"), "--split", "val", "--json"]) == 0
        reports.append(json.loads(capsys.readouterr().out))
    assert reports[0]["n"] == reports[1]["n"] == 18
    assert reports[0]["confusion_matrix"] == reports[1]["confusion_matrix"]


def test_the_scratch_engine_refuses_a_streamed_folder(jpeg_folder, tmp_path):
    config = _config(jpeg_folder, tmp_path, name="scratch", engine="scratch", stream=True, augment=AugmentConfig(),
                     normalize="unit")
    with pytest.raises(ConfigError, match="--engine scratch holds its images in memory"):
        train(config, progress=False)
    assert not (tmp_path / "runs" / "scratch").exists()


def test_a_folder_over_the_memory_budget_streams_and_says_so(jpeg_folder, tmp_path):
    # 90 images of 3x64x64 decode to 1.1 MB, over a 1 MB budget.
    config = _config(jpeg_folder, tmp_path, image_size=(64, 64), memory_budget_mb=1)
    with pytest.warns(DataWarning, match=r"take 1\.1 MB decoded, over the memory budget of 1\.0 MB; they are streamed"):
        data = prepare_data(config)
    assert isinstance(data.train, StreamedSplit) and isinstance(data.val, StreamedSplit)
    assert isinstance(batch_source(data.train, 16), StreamingBatches)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # within the budget: held in memory, quietly
        assert not isinstance(
            prepare_data(_config(jpeg_folder, tmp_path, image_size=(16, 16), memory_budget_mb=1)).train, StreamedSplit)


def test_the_decode_cache_says_how_large_and_where(jpeg_folder, monkeypatch):
    found = scan_folder(jpeg_folder, image_size=(32, 32), channels=3)
    home = os.environ["CONVNET_HOME"]
    with pytest.warns(DataWarning, match=rf"Caching 90 decoded images for streaming: 276\.5 kB in {home}/cache/"
                                         r".*\.u8 \(.* free there\)"):
        open_streamed(found)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second time it is read, not made
        open_streamed(found)
    monkeypatch.setattr(streaming.shutil, "disk_usage", lambda _: type("Usage", (), {"free": 10**6})())
    found = scan_folder(jpeg_folder, image_size=(30, 30), channels=3)
    with pytest.warns(DataWarning, match=rf"would take 243\.0 kB in {home}/cache, which has 1\.0 MB free; "
                                         r"images are decoded again every epoch"):
        split = open_streamed(found)
    assert split.store.path is None
    assert torch.equal(split.read(torch.arange(90)),
                       load_image_folder(jpeg_folder, image_size=(30, 30), channels=3).images)


def test_broken_files_and_fifos_are_skipped_as_in_memory(jpeg_folder, tmp_path):
    root = tmp_path / "folder"
    root.mkdir()
    for c in ("class0", "class1"):
        os.symlink(jpeg_folder / c, root / c)  # linked folders are passed over: copy instead
        os.unlink(root / c)
        (root / c).mkdir()
        for i in range(5):
            (root / c / f"{i}.jpg").write_bytes((jpeg_folder / c / f"{i:02d}.jpg").read_bytes())
    (root / "class0" / "broken.jpg").write_bytes(b"not a jpeg")
    os.mkfifo(root / "class1" / "pipe.png")
    with pytest.warns(DataWarning, match=r"Skipped 2 unreadable image file\(s\).*class0/broken\.jpg, class1/pipe\.png"):
        streamed = open_streamed(scan_folder(root, image_size=(24, 24)))
    memory = load_image_folder(root, image_size=(24, 24))
    assert len(streamed) == len(memory) == 10
    assert torch.equal(streamed.read(torch.arange(10)), memory.images) and torch.equal(streamed.labels, memory.labels)


_RUN = """
import sys
from convnet.data.augment import AugmentConfig
from convnet.training.config import TrainConfig
from convnet.training.train import train
from convnet.errors import ConfigError
data, runs, name = sys.argv[1:]
train(TrainConfig(data=data, runs_dir=runs, name=name, stream=True, loader_workers=1, model="spec",
                  model_args={"arch": "c8-b-p-c16-b-g"}, optimizer="sgd", lr=0.05, precision="fp32", batch_size=16,
                  val_split=0.2, epochs=2, image_size=(24, 24), sync_bn=True,
                  augment=AugmentConfig(flip="alternating", translate=2, cutout=6)), progress=False)
"""


@pytest.mark.slow
def test_two_gloo_processes_stream_like_one(jpeg_folder, tmp_path):
    """torchrun, 2 ranks each reading only its half of every global batch: the 1-process losses within
    a relative 1e-4, as tests/training/test_distributed.py justifies (float sums in another order)."""
    script, runs = tmp_path / "run.py", tmp_path / "runs"
    script.write_text(_RUN)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    for launcher, name in (([sys.executable], "one"), (torchrun, "two")):
        subprocess.run([*launcher, str(script), str(jpeg_folder), str(runs), name], check=True, env=env,
                       capture_output=True, timeout=300)
    assert sorted(p.name for p in runs.iterdir()) == ["one", "two"]
    one, two = (list(csv.DictReader((runs / name / "history.csv").read_text().splitlines())) for name in ("one", "two"))
    for a, b in zip(one, two, strict=True):
        for key in ("train_loss", "val_loss"):
            assert float(b[key]) == pytest.approx(float(a[key]), rel=1e-4), (key, a, b)
