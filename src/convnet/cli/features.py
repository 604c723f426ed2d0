"""`convnet features CHECKPOINT IMAGE`: write the feature maps of every convolution and the first-layer filters."""
from __future__ import annotations

import argparse
from pathlib import Path

from convnet.errors import ConfigError, ConvnetError

HELP = "Write what each convolution of a model sees in one image, and its first-layer filters, as PNG files."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="model.safetensors written by `convnet train`, or its run folder")
    parser.add_argument("image", help="the image to look at (any format Pillow reads)")
    parser.add_argument("--out", type=Path, help="folder for features_<layer>.png and filters.png, created "
                        "(default: features/<image name>/ beside the model, in its run folder)")


def pytorch_model(checkpoint: str, needs: str):
    """The Classifier of a model.safetensors (or its run folder) for a command that looks inside the network.

    Args:
        needs: what the command makes, for the sentence that refuses an .onnx file ("Feature maps").
    Raises:
        ConfigError: an .onnx file, which has no PyTorch layers to hook or differentiate.
    """
    from convnet.inference.model_file import load_checkpoint  # imported when called, as in `run`

    if Path(checkpoint).suffix.lower() == ".onnx":
        raise ConfigError(f"{needs} need the PyTorch model file, and {checkpoint} is an ONNX export; "
                          "pass the model.safetensors written by `convnet train` (or its run folder).")
    return load_checkpoint(checkpoint)


def out_folder(out: Path | None, checkpoint: str, kind: str, image: str) -> Path:
    """--out, or else KIND/<image name>/ beside the model: in the run folder when the model is a run's."""
    if out is not None:
        return out
    model = Path(checkpoint)
    return (model if model.is_dir() else model.parent) / kind / Path(image).stem


def cannot_write(out: Path, e: Exception) -> ConfigError:
    """The sentence for a folder that cannot be written (a file, below one, or the disk refuses;
    ValueError: a NUL byte)."""
    return ConfigError(
        f"Cannot write into {out} ({getattr(e, 'strerror', None) or e}); name a folder you can write to with --out."
    )


def run(args: argparse.Namespace) -> int:
    # Imported when the command runs: `convnet --help` and the other commands skip loading them.
    from convnet.viz.features import write_features

    clf = pytorch_model(args.checkpoint, "Feature maps")
    pixels = clf.to_input(args.image)
    out = out_folder(args.out, args.checkpoint, "features", args.image)
    try:
        paths = write_features(clf.model, pixels, clf.model_input(pixels), out)
    except ConvnetError:  # its own sentence (ConvnetError is a ValueError)
        raise
    except (OSError, ValueError) as e:
        raise cannot_write(out, e) from None
    for path in paths:
        print(path)
    return 0
