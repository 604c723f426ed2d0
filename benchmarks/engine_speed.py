"""What each engine-level speed choice is worth: training throughput with it and without it.

    python benchmarks/engine_speed.py [--repeats 3] [--isa avx2] [--set shipped|choices] [--only CASES]

Each case trains one epoch of the real training loop (`training.torch_trainer.TorchTrainer.train_epoch`:
batches cut from in-memory tensors, augmentation, forward, backward, optimizer step) on random
images of CIFAR-10's shape, after one epoch of warm-up, in a child process of its own: the
allocator setting is process-wide and cannot be undone. Cases run interleaved, `--repeats`
rounds, and each figure is the median over the rounds, so slow drift of a noisy machine hits
every case alike. Compared, each against the recipe as shipped:

    allocator   glibc's default malloc against inference.allocator.keep_freed_memory
                (also counted: minor page faults per image)
    pool order  the tutorial network's layers applied one by one (ReLU, then max-pool) against
                SequentialNet's pool-then-ReLU
    precision   fp32 against bf16 autocast, for the tutorial network and airnet
    frozen whitening bias   airnet's steps once --whiten-bias-epochs have passed

`--set choices` measures, for both precisions, the choices that were kept as they are: the
recipes' batch sizes against half or twice them, both cores against one thread, and eager
against `torch.compile` in fp32 (which convnet refuses on the CPU, see inference.runtime and
compile_cpu.py: this script compiles the training step itself to time it). Those
figures go to engine_speed[_avx2]_choices.json, so each file holds one run.

Each case also reports the FLOP rate it reached (the multiply-adds of the forward pass and of the
gradients the step really computes). `conv peak` times airnet's largest conv alone in fp32, the
most the conv kernels do on this machine, and every fp32 case's rate is set against it.

Writes benchmarks/results/engine_speed.json.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
from dataclasses import replace

from _common import ISA_ENV, isa_effect, isa_env, write_result

# name -> (recipe, images per epoch, variation from the recipe)
CASES = {
    "tutorial-fast": ("tutorial-fast", 20_000, {}),
    "tutorial-fast relu-then-pool": ("tutorial-fast", 20_000, {"relu_then_pool": True}),
    "tutorial-fast fp32": ("tutorial-fast", 20_000, {"precision": "fp32"}),
    "fast": ("fast", 10_000, {}),
    "fast default malloc": ("fast", 10_000, {"default_malloc": True}),
    "fast fp32": ("fast", 10_000, {"precision": "fp32"}),
    "tutorial-fast fp32 contiguous": ("tutorial-fast", 20_000, {"precision": "fp32", "channels_last": False}),
    "tutorial-fast fp32 relu-then-pool": ("tutorial-fast", 20_000, {"precision": "fp32", "relu_then_pool": True}),
    "fast fp32 contiguous": ("fast", 10_000, {"precision": "fp32", "channels_last": False}),
    # The timed epoch (1) is past --whiten-bias-epochs 1: backward skips the first conv's input gradient.
    "fast frozen whitening bias": ("fast", 10_000, {"whiten_bias_epochs": 1}),
    "fast fp32 frozen whitening bias": ("fast", 10_000, {"precision": "fp32", "whiten_bias_epochs": 1}),
}
# --set choices: the settings kept as they are, against what was tried instead
CHOICE_CASES = {
    "tutorial-fast batch 256": ("tutorial-fast", 20_000, {"batch_size": 256}),
    "tutorial-fast fp32 batch 256": ("tutorial-fast", 20_000, {"precision": "fp32", "batch_size": 256}),
    "tutorial-fast 1 thread": ("tutorial-fast", 20_000, {"threads": 1}),
    "tutorial-fast fp32 1 thread": ("tutorial-fast", 20_000, {"precision": "fp32", "threads": 1}),
    "tutorial-fast fp32 compiled": ("tutorial-fast", 20_000, {"precision": "fp32", "compile": True}),
    "fast batch 500": ("fast", 10_000, {"batch_size": 500}),
    "fast fp32 batch 500": ("fast", 10_000, {"precision": "fp32", "batch_size": 500}),
    "fast fp32 compiled": ("fast", 10_000, {"precision": "fp32", "compile": True}),
}
SETS = {
    "shipped": list(CASES),
    "choices": ["tutorial-fast", "tutorial-fast batch 256", "tutorial-fast 1 thread", "tutorial-fast fp32",
                "tutorial-fast fp32 batch 256", "tutorial-fast fp32 1 thread", "tutorial-fast fp32 compiled", "fast",
                "fast batch 500", "fast fp32", "fast fp32 batch 500", "fast fp32 compiled"],
}
CASES = {**CASES, **CHOICE_CASES}
# (what is compared, the variant without it, the variant with it)
COMPARISONS = {
    "allocator (airnet, batch 1000)": ("fast default malloc", "fast"),
    "pool then ReLU (tutorial network, batch 128)": ("tutorial-fast relu-then-pool", "tutorial-fast"),
    "bf16 autocast (tutorial network, batch 128)": ("tutorial-fast fp32", "tutorial-fast"),
    "bf16 autocast (airnet, batch 1000)": ("fast fp32", "fast"),
    "channels-last in fp32 (tutorial network, batch 128)": ("tutorial-fast fp32 contiguous", "tutorial-fast fp32"),
    "pool then ReLU in fp32 (tutorial network, batch 128)": ("tutorial-fast fp32 relu-then-pool", "tutorial-fast fp32"),
    "channels-last in fp32 (airnet, batch 1000)": ("fast fp32 contiguous", "fast fp32"),
    "frozen whitening bias (airnet, batch 1000)": ("fast", "fast frozen whitening bias"),
    "frozen whitening bias in fp32 (airnet, batch 1000)": ("fast fp32", "fast fp32 frozen whitening bias"),
    # Batch sizes are also accuracy choices (training.recipes); these say only what they cost in time.
    "batch 128 over 256 (tutorial network)": ("tutorial-fast batch 256", "tutorial-fast"),
    "batch 128 over 256 in fp32 (tutorial network)": ("tutorial-fast fp32 batch 256", "tutorial-fast fp32"),
    "batch 1000 over 500 (airnet)": ("fast batch 500", "fast"),
    "batch 1000 over 500 in fp32 (airnet)": ("fast fp32 batch 500", "fast fp32"),
    "both cores over 1 thread (tutorial network)": ("tutorial-fast 1 thread", "tutorial-fast"),
    "both cores over 1 thread in fp32 (tutorial network)": ("tutorial-fast fp32 1 thread", "tutorial-fast fp32"),
    "eager over torch.compile in fp32 (tutorial network)": ("tutorial-fast fp32 compiled", "tutorial-fast fp32"),
    "eager over torch.compile in fp32 (airnet)": ("fast fp32 compiled", "fast fp32"),
}
PEAK_CASE = "conv peak"  # not a training case: one large 3x3 conv's forward, the most this machine's conv kernels do


def child(name: str) -> dict:
    """Train one warm-up epoch and one timed epoch of case `name`; returns its figures."""
    import torch

    import convnet.training.torch_trainer as engine
    from convnet.data.dataset import Dataset
    from convnet.inference.allocator import keep_freed_memory
    from convnet.training.loop import TrainData
    from convnet.training.recipes import RECIPES
    from convnet.training.run_folder import RunFolder

    if name == PEAK_CASE:
        return conv_peak()
    recipe, n, variation = CASES[name]
    variation = dict(variation)
    if variation.pop("default_malloc", False):
        engine.keep_freed_memory = lambda: None  # the trainer's one call to it, skipped
    relu_then_pool = variation.pop("relu_then_pool", False)
    # convnet refuses --compile on the CPU (inference.runtime), so compiled here
    compiled = variation.pop("compile", False)
    if "threads" in variation:
        torch.set_num_threads(variation.pop("threads"))
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (n,), generator=gen)
    data = TrainData(Dataset(images, labels, tuple(str(i) for i in range(10)), "random"), None, (0.5,) * 3, (0.25,) * 3)
    with tempfile.TemporaryDirectory() as tmp:
        config = replace(RECIPES[recipe], runs_dir=tmp, name="run", **variation)
        trainer = engine.TorchTrainer(config, data, RunFolder.create(config), progress=False)
        if relu_then_pool:
            trainer.forward = trainer.model.layers  # nn.Sequential: every layer in its listed order
        if compiled:
            trainer.forward = torch.compile(trainer.forward)  # as TorchTrainer._wrapped does on a GPU
        trainer.train_epoch(0)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        seconds = trainer.train_epoch(1)[2]
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        step_flop = training_flop_per_image(trainer.model, images[:2].float())
    tuned = keep_freed_memory.cache_info().currsize == 1  # whether the trainer's call really ran
    assert tuned != (name == "fast default malloc"), f"{name}: the allocator setting is not the one this case measures"
    return {"ms_per_image": 1000 * seconds / n, "minor_faults_per_image": faults / n, "batch_size": config.batch_size,
            "autocast": str(trainer.amp), "malloc_tuned": tuned, "threads": torch.get_num_threads(),
            "compiled": compiled, "gflop_per_s": step_flop * n / seconds / 1e9}


def training_flop_per_image(model, x) -> float:
    """Multiply-adds x 2 per image of one training step's conv and linear layers, as the timed epoch ran them.

    Each layer's forward, its weight gradient when its weight learns, and its input gradient when
    its input needs one (the first conv's, only while the whitening bias learns).
    """
    import torch

    flop = 0.0

    def count(module, inputs, output):
        nonlocal flop
        # each output value: one dot product over a filter
        one_pass = 2 * output.numel() / len(output) * module.weight[0].numel()
        flop += one_pass * (1 + module.weight.requires_grad + inputs[0].requires_grad)

    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    hooks = [m.register_forward_hook(count) for m in layers]
    with torch.enable_grad():
        model.eval()(x.contiguous())
    for h in hooks:
        h.remove()
    return flop


def conv_peak() -> dict:
    """GFLOP/s of airnet's largest conv (256 -> 256 channels, 3x3, 7x7 images, batch 1000, fp32) alone."""
    import time

    import torch
    import torch.nn.functional as F

    x = torch.randn(1000, 256, 7, 7).contiguous(memory_format=torch.channels_last)
    w = torch.randn(256, 256, 3, 3).contiguous(memory_format=torch.channels_last)
    for _ in range(2):
        F.conv2d(x, w, padding=1)
    start, repeats = time.perf_counter(), 5
    for _ in range(repeats):
        F.conv2d(x, w, padding=1)
    seconds = (time.perf_counter() - start) / repeats
    return {"gflop_per_s": 2 * 256 * 256 * 9 * 49 * 1000 / seconds / 1e9}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds over all cases")
    p.add_argument("--isa", choices=("native", *ISA_ENV), default="native",
                   help="restrict the CPU's instruction set in every case")
    p.add_argument("--set", choices=tuple(SETS), default="shipped",
                   help="which cases: the shipped choices against their alternatives, or the choices kept as they are")
    p.add_argument("--only", help="comma-separated case names (default: all of --set)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child)))
        return
    names = args.only.split(",") if args.only else [*SETS[args.set], PEAK_CASE]
    env = isa_env(args.isa)  # with --isa avx2 the bf16 cases fall back to fp32, as on such a CPU; `autocast` says so
    runs: dict[str, list[dict]] = {name: [] for name in names}
    failed: dict[str, str] = {}  # case -> the last line of its error
    for round_ in range(args.repeats):
        for name in names:
            if name in failed:
                continue
            proc = subprocess.run([sys.executable, __file__, "--child", name], capture_output=True, text=True, env=env)
            if proc.returncode != 0:  # a case that cannot run here is a finding; the others still run
                failed[name] = (proc.stderr.strip().splitlines() or ["(no message)"])[-1][:500]
                print(f"round {round_ + 1}/{args.repeats}  {name}: failed: {failed[name]}", flush=True)
                runs.pop(name)
                continue
            runs[name].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            figure = runs[name][-1]
            shown = (f"{figure['ms_per_image']:.4f} ms/image" if "ms_per_image" in figure
                     else f"{figure['gflop_per_s']:.0f} GFLOP/s")
            print(f"round {round_ + 1}/{args.repeats}  {name}: {shown}", flush=True)
    peak = statistics.median(r["gflop_per_s"] for r in runs.pop(PEAK_CASE)) if PEAK_CASE in runs else None
    cases = {
        name: {
            "ms_per_image": statistics.median(r["ms_per_image"] for r in rs),
            "ms_per_image_each_round": [round(r["ms_per_image"], 5) for r in rs],
            "minor_faults_per_image": statistics.median(r["minor_faults_per_image"] for r in rs),
            "batch_size": rs[0]["batch_size"],
            "autocast": rs[0]["autocast"],
            "malloc_tuned": rs[0]["malloc_tuned"],
            "threads": rs[0]["threads"],
            "compiled": rs[0]["compiled"],
            "gflop_per_s": statistics.median(r["gflop_per_s"] for r in rs),
        }
        for name, rs in runs.items()
    }
    speedups = {what: cases[slow]["ms_per_image"] / cases[fast]["ms_per_image"]
                for what, (slow, fast) in COMPARISONS.items() if slow in cases and fast in cases}
    for what, x in speedups.items():
        print(f"{what}: {x:.3f}x")
    # One file per instruction set: native figures and AVX2-restricted ones are kept side by side.
    name = ("engine_speed" + ("" if args.isa == "native" else f"_{args.isa}")
            + ("" if args.set == "shipped" else f"_{args.set}"))
    write_result(name, {
        "isa": args.isa, "isa_env": ISA_ENV.get(args.isa, {}), "isa_effect": isa_effect(args.isa),
        "method": "one epoch of the real training loop on random 3x32x32 images after one warm-up epoch, "
                  f"each case in its own process, median of {args.repeats} interleaved rounds",
        "cases": cases,
        "failed_cases": failed,
        "speedup_of_shipped_choice": speedups,
        "fp32_conv_peak_gflop_per_s": peak,
        "fp32_share_of_conv_peak": {name: c["gflop_per_s"] / peak for name, c in cases.items()
                                    if peak and c["autocast"] == "None"},
    })


if __name__ == "__main__":
    main()
