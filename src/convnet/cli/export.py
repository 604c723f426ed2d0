"""convnet export: a trained model as an ONNX file, or as a Triton Inference Server model repository."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from convnet.errors import ConfigError

HELP = "Export a trained model to ONNX (uint8 pixels in, logits out) or to a Triton model repository."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="model.safetensors written by `convnet train` (or its run folder)")
    p.add_argument("--format", default="onnx", choices=("onnx", "triton"),
                   help="onnx: one .onnx file; triton: OUT/NAME/{config.pbtxt,labels.txt,1/model.onnx}")
    p.add_argument("--out", help="onnx: the file (default: the model file with .onnx for its suffix); "
                   "triton: the repository folder (default: triton/ beside the model)")
    p.add_argument("--name", help="triton: the model's name in the repository (default: the run folder's name)")
    p.add_argument("--max-batch-size", type=int, help="triton: the largest batch Triton sends the model (default: 256)")
    p.add_argument("--force", action="store_true", help="replace an existing file or model folder")


def _model_file(checkpoint: str) -> Path:
    path = Path(checkpoint)
    return path / "model.safetensors" if path.is_dir() else path


def run(args: argparse.Namespace) -> int:
    # Imported when the command runs: `convnet --help` and the other commands skip loading them.
    from convnet.export.onnx import export_onnx
    from convnet.export.triton import MAX_BATCH_SIZE, export_triton
    from convnet.inference.model_file import load_checkpoint

    if args.out == "":
        raise ConfigError(
            "--out is empty; name the file (onnx) or the repository folder (triton) to write, or leave --out out."
        )
    clf = load_checkpoint(args.checkpoint)
    model_file = _model_file(args.checkpoint)
    if args.format == "onnx":
        written = export_onnx(clf, Path(args.out) if args.out is not None else model_file.with_suffix(".onnx"),
                              force=args.force)
    else:
        # The run folder names the model; Triton allows letters, digits, '_', '.' and '-'.
        name = (args.name if args.name is not None
                else re.sub(r"[^A-Za-z0-9_.-]", "_", model_file.resolve().parent.name).lstrip(".-") or "convnet")
        max_batch_size = args.max_batch_size if args.max_batch_size is not None else MAX_BATCH_SIZE
        written = export_triton(clf, Path(args.out) if args.out is not None else model_file.parent / "triton", name,
                                force=args.force, max_batch_size=max_batch_size)
    print(written)
    return 0
