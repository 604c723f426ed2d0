"""The `fast` and `best` recipes on a CUDA GPU, after checking the GPU path against the CPU path.

    python benchmarks/gpu.py [--data DIR] [--skip-best]

First, at a small size: every registered model's logits on the same weights and inputs agree
between CPU and GPU in fp32 (stated tolerance), and a short seeded training run (tutorial
recipe, 2,000 images, 1 epoch, fp32) reaches nearly the same validation accuracy on both.
Then `fast` and `best` are timed on the GPU (start-up and data loading included).
Writes benchmarks/results/gpu.json. Needs a GPU; CI never runs it.
"""
from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path

import torch
from _common import SHARED_CIFAR, timed_run, write_result

LOGIT_TOLERANCE = 1e-3  # fp32 CPU vs GPU: different kernels sum in different orders (TF32 disabled)


def check_models() -> dict:
    from convnet.models import create_model, list_models

    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    out = {}
    for name in list_models():
        torch.manual_seed(0)
        model = create_model(name, num_classes=10, in_chans=3, input_size=(32, 32)).eval()
        x = torch.randn(64, 3, 32, 32)
        with torch.no_grad():
            cpu = model(x)
            gpu = model.cuda()(x.cuda()).cpu()
        out[name] = {"max_abs_diff": (cpu - gpu).abs().max().item()}
        out[name]["ok"] = out[name]["max_abs_diff"] <= LOGIT_TOLERANCE * max(1.0, cpu.abs().max().item())
    return out


def train(args: list[str], runs: Path, name: str) -> dict:
    seconds, _ = timed_run([sys.executable, "-m", "convnet", "train", *args, "--runs-dir", str(runs), "--name", name, "--quiet"], check=True)
    rows = list(csv.DictReader(open(runs / name / "history.csv")))
    from convnet.engine.checkpoint import read_model_file

    metrics = read_model_file(runs / name / "model.safetensors")[1].metrics
    return {"wall_seconds": seconds, "val_acc": float(rows[-1]["val_acc"]), "val_acc_tta": metrics.get("val_acc_tta"),
            "per_epoch_val_acc": [float(r["val_acc"]) for r in rows]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(SHARED_CIFAR))
    p.add_argument("--skip-best", action="store_true")
    args = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("No CUDA GPU here; this benchmark runs on a GPU machine.")
    figures: dict = {"gpu": torch.cuda.get_device_name(0), "model_check": check_models()}
    small = ["--data", args.data, "--limit", "2000", "--epochs", "1", "--precision", "fp32"]
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp)
        cpu, gpu = train([*small, "--device", "cpu"], runs, "small-cpu"), train([*small, "--device", "cuda"], runs, "small-gpu")
        figures["small_training"] = {"cpu": cpu, "gpu": gpu, "ok": abs(cpu["val_acc"] - gpu["val_acc"]) <= 0.03}
        figures["fast"] = train(["--recipe", "fast", "--data", args.data, "--device", "cuda"], runs, "fast")
        if not args.skip_best:
            figures["best"] = train(["--recipe", "best", "--data", args.data, "--device", "cuda"], runs, "best")
    write_result("gpu", figures)


if __name__ == "__main__":
    main()
