"""convnet's `fast` and `best` recipes on a CUDA GPU, beside airbench94_muon's own script on the same images.

    python benchmarks/gpu.py [--data DIR] [--airbench PATH] [--airbench-runs N] [--airbench-compile-default]
                             [--deadline S] [--out FILE] [--rehearse]

Stages, in order; each is recorded (or its error is) before the next starts, and a stage that
would not fit what is left of `--deadline` is skipped and says so:
1. every registered model's logits on the same weights and inputs agree between CPU and GPU in
   fp32 (TF32 off; stated tolerance);
2. a short seeded training run (tutorial recipe, 2,000 images, 1 epoch, fp32) reaches nearly the
   same validation accuracy on the CPU and on the GPU;
3. `fast` (seed 0) timed on the GPU, start-up and data loading included;
4. airbench94_muon.py, the published script (fetched from KellerJordan/cifar10-airbench; the
   project never copies it), on the same 45,000 training and 5,000 validation images that
   convnet's seed-0 split gives: its `train.pt`/`test.pt` are written from that split (shuffled),
   and only its number of runs (`range(200)`) is changed, and with `--airbench-compile-default`
   its compile mode; the result lists the changes;
5. `best` (seed 0), then `fast` on seeds 1 and 2, and `fast --compile`, as time allows.

`--rehearse` runs the same stages on the CPU at toy size (no airbench and no `--compile`: they need CUDA), to check
the script before spending GPU time; it writes only the --out copy. Writes benchmarks/results/gpu.json
(and a copy at --out).
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import RESULTS, SHARED_CIFAR, git_commit, write_result

LOGIT_TOLERANCE = 1e-3  # fp32 CPU vs GPU: different kernels sum in different orders (TF32 disabled)
SMALL_ACC_TOLERANCE = 0.03  # the 2,000-image run: the same seed on both devices, different kernels
AIRBENCH_RUNS_LINE = "range(200)"  # the published script's number of runs
AIRBENCH_TIMEOUT = 300  # seconds: compilation and the runs
# On an H200 with torch 2.11, the published max-autotune compilation had not finished in 300 s.
AIRBENCH_COMPILE_LINE = 'model.compile(mode="max-autotune")'


def check_models(device: str) -> dict:
    from convnet.models import create_model, list_models

    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    out = {}
    for name in list_models():
        torch.manual_seed(0)
        model = create_model(name, num_classes=10, in_chans=3, input_size=(32, 32)).eval()
        x = torch.randn(64, 3, 32, 32)
        with torch.no_grad():
            cpu = model(x)
            other = model.to(device)(x.to(device)).cpu()
        diff = (cpu - other).abs().max().item()
        out[name] = {"max_abs_diff": diff, "ok": diff <= LOGIT_TOLERANCE * max(1.0, cpu.abs().max().item())}
    return out


def train(args: list[str], runs: Path, name: str, timeout: float) -> dict:
    """One `convnet train` in its own process: wall time, the epochs' own seconds and the accuracies."""
    cmd = [sys.executable, "-m", "convnet", "train", *args, "--runs-dir", str(runs), "--name", name, "--quiet"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"convnet train exited {proc.returncode}: {proc.stderr[-2000:]}")
    rows = list(csv.DictReader((runs / name / "history.csv").read_text().splitlines()))
    from convnet.inference.model_file import read_model_file

    metrics = read_model_file(runs / name / "model.safetensors")[1].metrics
    return {
        "command": "convnet train " + " ".join(args),
        "wall_seconds": wall,
        "epoch_seconds": sum(float(r["seconds"]) for r in rows),  # training and per-epoch validation, no start-up
        "val_acc": float(rows[-1]["val_acc"]),
        "val_acc_tta": metrics.get("val_acc_tta"),
        "per_epoch_val_acc": [float(r["val_acc"]) for r in rows],
    }


def airbench_data(data: str, folder: Path) -> dict:
    """airbench's cifar10/train.pt and test.pt, written from convnet's seed-0 training and validation split."""
    from convnet.data.batches import shuffled_indices
    from convnet.training.prepare import prepare_data
    from convnet.training.recipes import recipe_config

    split = prepare_data(recipe_config("fast", data=data))
    folder.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", split.train), ("test", split.val)):
        # The split comes in folder order, class by class; the official files are in random order, and
        # airbench fits its whitening layer to the first 5,000 training images, so they are shuffled (seeded).
        part = part.subset(shuffled_indices(len(part), 0))
        # airbench keeps images as (N, H, W, C) uint8, as torchvision's CIFAR10.data holds them.
        images = part.images.permute(0, 2, 3, 1).contiguous()
        torch.save({"images": images, "labels": part.labels.clone(), "classes": list(part.classes)},
                   folder / f"{name}.pt")
    return {"train_images": len(split.train), "test_images": len(split.val)}


def parse_airbench(stdout: str) -> dict:
    """The per-run results of airbench's printed table: each run's final ("eval") row, the warm-up left out."""
    runs, label = [], None
    for line in stdout.splitlines():
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 6 or cells[0] == "run":
            continue
        label = cells[0] or label
        if cells[1] == "eval" and label != "warmup":
            runs.append({"tta_val_acc": float(cells[4]), "time_seconds": float(cells[5])})
    out: dict = {"runs": runs}
    if runs:
        accs, times = [r["tta_val_acc"] for r in runs], [r["time_seconds"] for r in runs]
        out.update(mean_tta_val_acc=statistics.mean(accs), mean_time_seconds=statistics.mean(times),
                   std_tta_val_acc=statistics.stdev(accs) if len(runs) > 1 else None)
    printed = re.search(r"Mean: ([0-9.]+)", stdout)
    if printed:
        out["printed_mean"] = float(printed.group(1))
    return out


def airbench(script: Path, data: str, runs: int, timeout: float, compile_default: bool) -> dict:
    code = script.read_text()
    changes = {AIRBENCH_RUNS_LINE: f"range({runs})"}
    if compile_default:
        changes[AIRBENCH_COMPILE_LINE] = "model.compile()"
    for old in changes:
        if code.count(old) != 1:
            raise RuntimeError(f"{script} does not contain {old!r} exactly once; is it airbench94_muon.py?")
        code = code.replace(old, changes[old])
    with tempfile.TemporaryDirectory() as tmp:
        out = {"script": script.name, "changed": [f"{a} -> {b}" for a, b in changes.items()],
               **airbench_data(data, Path(tmp) / "cifar10")}
        (Path(tmp) / script.name).write_text(code)
        start = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, script.name], cwd=tmp, capture_output=True, text=True,
                                  timeout=timeout)
            stdout, stderr, status = proc.stdout, proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as e:
            stdout, stderr, status = _text(e.stdout), _text(e.stderr), f"timed out after {timeout:.0f} s"
        out["wall_seconds"] = time.perf_counter() - start  # compilation (its warm-up run) and data loading included
        out["exit"] = status
        out.update(parse_airbench(stdout))
        if status != 0:
            out["stderr_tail"] = stderr[-2000:]
    return out


def _text(b: bytes | str | None) -> str:
    return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")


def side_by_side(figures: dict) -> dict:
    """convnet's `fast` over its seeds beside airbench's runs: accuracy with TTA, and time."""
    fast = [figures[k] for k in ("fast", "fast-seed1", "fast-seed2") if "val_acc_tta" in figures.get(k, {})]
    bench = figures.get("airbench94_muon", {})
    out: dict = {}
    if fast:
        out["fast"] = {
            "seeds": len(fast),
            "mean_val_acc_tta": statistics.mean(f["val_acc_tta"] for f in fast),
            "min_val_acc_tta": min(f["val_acc_tta"] for f in fast),
            "mean_epoch_seconds": statistics.mean(f["epoch_seconds"] for f in fast),
            "mean_wall_seconds": statistics.mean(f["wall_seconds"] for f in fast),
        }
    if bench.get("runs"):
        out["airbench94_muon"] = {"runs": len(bench["runs"]), "mean_tta_val_acc": bench["mean_tta_val_acc"],
                                  "mean_time_seconds": bench["mean_time_seconds"],
                                  "wall_seconds_all_runs": bench["wall_seconds"]}
    return out


class Stages:
    """Runs stages in order within a deadline, recording each result (or its error) as it ends."""

    def __init__(self, figures: dict, deadline: float, out: Path | None, folder: Path = RESULTS):
        self.figures, self.end, self.out, self.folder = figures, time.perf_counter() + deadline, out, folder

    def left(self) -> float:
        return self.end - time.perf_counter()

    def run(self, name: str, needs: float, fn) -> None:
        if self.left() < needs:
            self.figures[name] = {"skipped": f"needs about {needs:.0f} s, {self.left():.0f} s of the deadline left"}
        else:
            start = time.perf_counter()
            try:
                self.figures[name] = fn()
            except Exception as e:  # one stage's failure is a finding; the later stages still run
                self.figures[name] = {"error": f"{type(e).__name__}: {e}"}
            print(f"{name}: {time.perf_counter() - start:.1f} s", json.dumps(self.figures[name])[:400], flush=True)
        self.figures["side_by_side"] = side_by_side(self.figures)
        path = write_result("gpu", self.figures, self.folder)
        if self.out:
            shutil.copy(path, self.out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(SHARED_CIFAR))
    p.add_argument("--airbench", type=Path, help="airbench94_muon.py, as published (KellerJordan/cifar10-airbench)")
    p.add_argument("--airbench-runs", type=int, default=10)
    p.add_argument("--airbench-compile-default", action="store_true",
                   help="compile airbench's model in torch's default mode instead of max-autotune "
                        "(its training is the same; autotuning can take minutes)")
    p.add_argument("--deadline", type=float, default=3600,
                   help="seconds for all stages; later stages that would not fit are skipped")
    p.add_argument("--out", type=Path, help="also copy the result file here")
    p.add_argument("--commit", default=None, help="the commit measured (where the copy has no git history)")
    p.add_argument("--rehearse", action="store_true",
                   help="run every stage on the CPU at toy size, to check this script")
    args = p.parse_args()
    device = "cpu" if args.rehearse else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("No CUDA GPU here; this benchmark runs on a GPU machine (--rehearse checks it on the CPU).")
    figures: dict = {"commit": args.commit or git_commit(),
                     "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
                     "data": args.data, "split": "convnet's seed-0 split: 45,000 training, 5,000 validation images"}
    toy = ["--limit", "2000", "--epochs", "1"] if args.rehearse else []
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp)
        # a rehearsal keeps the real results
        stages = Stages(figures, args.deadline, args.out, runs if args.rehearse else RESULTS)

        def recipe(name: str, *extra: str, seed: int = 0, key: str, needs: float = 20) -> None:
            stages.run(key, needs, lambda: train(["--recipe", name, "--data", args.data, "--device", device,
                                                  "--seed", str(seed), *extra, *toy],
                                                 runs, key, max(stages.left(), 1)))

        def small() -> dict:
            base = ["--data", args.data, "--limit", "2000", "--epochs", "1", "--precision", "fp32"]
            cpu = train([*base, "--device", "cpu"], runs, "small-cpu", stages.left())
            other = train([*base, "--device", device], runs, "small-device", stages.left())
            return {"cpu": cpu, "device": other, "ok": abs(cpu["val_acc"] - other["val_acc"]) <= SMALL_ACC_TOLERANCE}

        stages.run("model_check", 10, lambda: check_models(device))
        stages.run("small_training", 30, small)
        recipe("fast", key="fast")
        if args.airbench and device == "cuda":
            timeout = lambda: min(AIRBENCH_TIMEOUT, stages.left() - 5)  # noqa: E731
            stages.run("airbench94_muon", 60, lambda: airbench(args.airbench, args.data, args.airbench_runs, timeout(),
                                                               args.airbench_compile_default))
        fast_wall = figures["fast"].get("wall_seconds", 20)
        recipe("best", key="best", needs=3 * fast_wall)  # 27 epochs at 2.5x the width
        for seed in (1, 2):
            recipe("fast", seed=seed, key=f"fast-seed{seed}", needs=fast_wall)
        if device == "cuda":  # convnet refuses --compile on the CPU (inference.runtime)
            recipe("fast", "--compile", key="fast-compile", needs=fast_wall + 60)


if __name__ == "__main__":
    main()
