"""convnet evaluate: accuracy, per-class metrics, confusion matrix and worst mistakes of a model."""
from __future__ import annotations

import argparse
from pathlib import Path

from convnet.cli._common import add_data_argument, to_json
from convnet.errors import ConfigError, ConvnetError

HELP = "Score a trained model on a labelled split: accuracy, per-class precision/recall/F1, confusion matrix."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint",
                   help="model.safetensors written by `convnet train` (or its run folder), or an .onnx file from "
                   "`convnet export`")
    add_data_argument(p, "; default: the data the run was trained on. "
                      "An image folder of class subfolders is evaluated whole.")
    p.add_argument("--split", default="test", choices=("test", "val", "train"),
                   help="which split; val is the run's own validation split")
    p.add_argument("--tta", type=int, default=0, choices=(0, 1, 2),
                   help="test-time augmentation level (1: flip, 2: flip and 1-pixel shifts)")
    p.add_argument("--out", help="folder for confusion.png and mistakes.png (default: <run folder>/eval-<split>)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the report")


def run(args: argparse.Namespace) -> int:
    # Imported when the command runs: `convnet --help` and the other commands skip loading them.
    from convnet.inference.evaluate import evaluate, format_report, write_figures
    from convnet.inference.loading import load_classifier
    from convnet.inference.runtime import resolve_device
    from convnet.training.splits import evaluation_split

    clf = load_classifier(args.checkpoint, device=resolve_device("auto"))
    ds = evaluation_split(args.checkpoint, clf.info, args.data, args.split)
    ev = evaluate(clf, ds, tta=args.tta)
    model_path = Path(args.checkpoint)
    run_dir = model_path if model_path.is_dir() else model_path.parent
    out = Path(args.out) if args.out else run_dir / f"eval-{args.split}"  # '' is the default too
    try:
        figures = write_figures(ev, ds, out)
    except ConvnetError:  # its own sentence (ConvnetError is a ValueError)
        raise
    except (OSError, ValueError) as e:
        # --out is a file, or lies below one, or the disk refuses; ValueError: a NUL byte in it
        raise ConfigError(
            f"Cannot write into --out {out} ({getattr(e, 'strerror', None) or e}); name a folder, new or existing."
        ) from None
    if args.json:
        print(to_json({**ev.to_dict(), "split": args.split, "data": ds.source, "tta": args.tta,
                       "figures": [str(f) for f in figures]}))
    else:
        print(f"{ds.source}: {ev.n} images")
        print(format_report(ev))
        print("\n" + "\n".join(f"wrote {f}" for f in figures))
    return 0
