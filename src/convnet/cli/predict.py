"""convnet predict: top-k classes with probabilities for image files and folders."""
from __future__ import annotations

import argparse
import sys

from convnet.cli._common import to_json
from convnet.errors import ConfigError

HELP = "Classify image files or folders with a trained model; prints the top-k classes per file."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint",
                   help="model.safetensors written by `convnet train` (or its run folder), or an .onnx file from "
                   "`convnet export`")
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files, or folders searched for images")
    p.add_argument("--top-k", type=int, default=3, help="how many classes to show per image")
    p.add_argument("--tta", type=int, default=0, choices=(0, 1, 2), help="test-time augmentation level")
    p.add_argument("--json", action="store_true", help="one JSON object per line: {path, predictions} or {path, error}")


def run(args: argparse.Namespace) -> int:
    # Imported when the command runs: `convnet --help` and the other commands skip loading them.
    from convnet.data.images import display_name
    from convnet.inference.loading import load_classifier
    from convnet.inference.predict import predict_files

    if args.top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {args.top_k}.")
    clf = load_classifier(args.checkpoint)
    failed = answered = 0
    for r in predict_files(clf, args.images, top_k=args.top_k, tta=args.tta):
        answered += 1
        if args.json:
            # Names that are not UTF-8 are shown escaped (display_name), in JSON as in text.
            shown = {k: display_name(v) if k in ("path", "error") else v for k, v in r.to_dict().items()}
            print(to_json(shown), flush=True)
        elif r.error is None:
            print(display_name(f"{r.path}: " + ", ".join(f"{c} {p:.3f}" for c, p in r.predictions)), flush=True)
        if r.error is not None:
            failed += 1
            if not args.json:
                # the reader's sentences name the file already
                named = r.error if r.path in r.error else f"{r.path}: {r.error}"
                print(display_name(f"error: {named}"), file=sys.stderr, flush=True)
    if answered == 0:
        named = " ".join(display_name(p) for p in args.images)
        raise ConfigError(f"No image files found in {named}; pass image files or folders that hold some.")
    return 1 if failed else 0
