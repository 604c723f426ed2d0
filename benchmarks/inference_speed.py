"""What `evaluate`, `predict` and `serve` gain from the training engine's memory and layout choices.

    python benchmarks/inference_speed.py [--repeats 3] [--isa avx2]

Each case scores 5,000 random 3x32x32 images with `inference.runtime.batched_logits` at batch
1,000 in fp32 (the precision of every standalone inference path), once untimed and once timed,
in a child process of its own: the allocator setting is process-wide and cannot be undone.
Cases run interleaved, `--repeats` rounds, and each figure is the median over the rounds:

    default malloc   glibc's default: every batch's activations are mapped and zeroed afresh
    tuned allocator  inference.allocator.keep_freed_memory, as training has it
    shipped          the tuned allocator and channels-last batches (what Classifier.logits runs)

Writes benchmarks/results/inference_speed.json (inference_speed_avx2.json with --isa avx2).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from _common import ISA_ENV, isa_effect, isa_env, write_result

IMAGES, BATCH = 5000, 1000
MODELS = ("airnet", "tutorial")
# (allocator tuned, channels-last)
VARIANTS = {"default malloc": (False, False), "tuned allocator": (True, False), "shipped": (True, True)}


def child(model_name: str, variant: str) -> dict:
    """Seconds to score IMAGES images with `model_name` as `variant` says, after one untimed pass."""
    import torch

    import convnet.inference.runtime as inference
    from convnet.models.registry import create_model

    tuned, channels_last = VARIANTS[variant]
    if not tuned:
        inference.keep_freed_memory = lambda: None  # batched_logits's one call to it, skipped
    torch.manual_seed(0)
    model = create_model(model_name, num_classes=10, in_chans=3, input_size=(32, 32)).eval()
    images = torch.randint(0, 256, (IMAGES, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))

    def score() -> torch.Tensor:
        return inference.batched_logits(model, images, (0.5,) * 3, (0.25,) * 3, BATCH, channels_last=channels_last)

    score()
    start = time.perf_counter()
    logits = score()
    return {"seconds": time.perf_counter() - start, "first_logits": logits[0, :3].tolist()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds over all cases")
    p.add_argument("--isa", choices=("native", *ISA_ENV), default="native",
                   help="restrict the CPU's instruction set in every case")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    env = isa_env(args.isa)
    cases = [(m, v) for m in MODELS for v in VARIANTS]
    runs: dict[tuple[str, str], list[dict]] = {case: [] for case in cases}
    for round_ in range(args.repeats):
        for model_name, variant in cases:
            out = subprocess.run([sys.executable, __file__, "--child", model_name, variant], check=True,
                                 stdout=subprocess.PIPE, text=True, env=env).stdout
            runs[model_name, variant].append(json.loads(out.strip().splitlines()[-1]))
            print(f"round {round_ + 1}/{args.repeats}  {model_name} {variant}: "
                  f"{runs[model_name, variant][-1]['seconds']:.3f} s", flush=True)
    figures = {
        model_name: {
            variant: {
                "seconds": statistics.median(r["seconds"] for r in runs[model_name, variant]),
                "seconds_each_round": [round(r["seconds"], 4) for r in runs[model_name, variant]],
                "ms_per_image": 1000 * statistics.median(r["seconds"] for r in runs[model_name, variant]) / IMAGES,
                # the same images and weights: layouts agree to rounding
                "first_logits": runs[model_name, variant][0]["first_logits"],
            }
            for variant in VARIANTS
        }
        for model_name in MODELS
    }
    speedups = {model_name: {"tuned allocator": f["default malloc"]["seconds"] / f["tuned allocator"]["seconds"],
                             "shipped": f["default malloc"]["seconds"] / f["shipped"]["seconds"]}
                for model_name, f in figures.items()}
    print(json.dumps(speedups, indent=1))
    write_result("inference_speed" if args.isa == "native" else f"inference_speed_{args.isa}", {
        "isa": args.isa, "isa_env": ISA_ENV.get(args.isa, {}), "isa_effect": isa_effect(args.isa),
        "method": f"inference.runtime.batched_logits on {IMAGES} random 3x32x32 images at batch {BATCH}, fp32, "
                  f"randomly initialised models, one untimed pass first, each case in its own process, "
                  f"median of {args.repeats} interleaved rounds",
        "cases": figures,
        "speedup_over_default_malloc": speedups,
    })


if __name__ == "__main__":
    main()
