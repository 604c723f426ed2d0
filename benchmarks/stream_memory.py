"""Peak memory and speed of training from a folder streamed from disk, as the folder grows.

Generates two folders of 256x256 JPEGs (10 classes, smooth noise, so they compress like photos),
2,000 and 20,000 images, in a temporary folder deleted at the end, then times one epoch of
`convnet train --stream` over each and of the in-memory path over the 2,000, each in a fresh
process (`--image-size 64`, so that an epoch over 20,000 takes a minute on 2 cores while every
file is still a full 256x256 JPEG to decode). Reported: the peak resident memory of the training
process and its loader and decoder workers (`os.wait4`'s ru_maxrss: the largest of the process
and the children it reaped), and images/s of the epoch as history.csv records it (training only:
decoding into the cache comes before it in both paths, and is timed as `seconds` of the whole run).

Issue 12 asks: streaming peak memory over 20,000 within 1.5x of over 2,000; streaming images/s at
least 70% of the in-memory path's on the same images (the 2,000).

    .venv/bin/python benchmarks/stream_memory.py   # writes benchmarks/results/stream_memory.json
"""
from __future__ import annotations

import csv
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

CLASSES = 10
SIDE = 256  # pixels of every generated JPEG
TRAIN = ["--image-size", "64", "--epochs", "1", "--batch-size", "256", "--val-split", "0", "--quiet"]


def _write_images(job: tuple[str, int, int]) -> None:
    root, start, stop = job
    for i in range(start, stop):
        rng = np.random.default_rng(i)
        coarse = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)  # upscaled: smooth like a photo, not white noise
        img = Image.fromarray(coarse).resize((SIDE, SIDE), Image.Resampling.BICUBIC)
        img.save(os.path.join(root, f"class{i % CLASSES}", f"{i:06d}.jpg"), quality=90)


def make_folder(root: Path, n: int) -> Path:
    for c in range(CLASSES):
        (root / f"class{c}").mkdir(parents=True)
    step = 500
    with multiprocessing.get_context("fork").Pool(os.cpu_count()) as pool:
        pool.map(_write_images, [(str(root), s, min(s + step, n)) for s in range(0, n, step)])
    return root


def run(data: Path, runs: Path, name: str, home: Path, *extra: str) -> dict:
    """One `convnet train` in a child process: its peak RSS (MB), wall seconds and the epoch's images/s."""
    cmd = [sys.executable, "-m", "convnet", "train", "--data", str(data), "--runs-dir", str(runs), "--name", name,
           *TRAIN, *extra]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env={**os.environ, "CONVNET_HOME": str(home)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    err = proc.stderr.read().decode()
    proc.stderr.close()
    if status != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err}")
    row = next(csv.DictReader((runs / name / "history.csv").read_text().splitlines()))
    return {"peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "images_per_s": float(row["images_per_s"]),
            "run_seconds": round(seconds, 1)}


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="stream_memory_"))
    try:
        home, runs, figures = tmp / "home", tmp / "runs", {}
        start = time.perf_counter()
        small, large = make_folder(tmp / "small", 2_000), make_folder(tmp / "large", 20_000)
        figures["generate_seconds"] = round(time.perf_counter() - start, 1)
        figures["settings"] = {"jpeg_side": SIDE, "classes": CLASSES, "train_args": TRAIN,
                               "loader_workers": "default (2)"}
        figures["stream_2000"] = run(small, runs, "stream_2000", home, "--stream")
        figures["stream_20000"] = run(large, runs, "stream_20000", home, "--stream")
        figures["memory_2000"] = run(small, runs, "memory_2000", home)
        # The decode caches are made by the runs above; a second streamed run over 20,000 reads them.
        figures["stream_20000_cached"] = run(large, runs, "stream_20000_cached", home, "--stream")
        rss = figures["stream_20000"]["peak_rss_mb"] / figures["stream_2000"]["peak_rss_mb"]
        speed = figures["stream_2000"]["images_per_s"] / figures["memory_2000"]["images_per_s"]
        figures["peak_rss_ratio_20000_vs_2000"] = round(rss, 3)
        figures["stream_vs_memory_images_per_s_2000"] = round(speed, 3)
        figures["acceptance"] = {"rss_within_1.5x": rss <= 1.5, "speed_at_least_70_percent": speed >= 0.7}
        write_result("stream_memory", figures)
        print({k: v for k, v in figures.items() if k != "settings"})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
