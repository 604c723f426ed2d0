"""The model file: weights plus everything needed to use them, in one safetensors file.

Format ("convnet.model/1"): a safetensors file whose tensors are the model's `state_dict()`
(float32) and whose metadata holds two strings:

    "format":  "convnet.model/1"
    "convnet": JSON of `ModelInfo` (model name and arguments, class names, input channels and
               size, normalization, data source, final metrics)

Images go into the model as `(x / 255 - mean) / std` per channel, x being uint8 (N, C, H, W)
(`data.normalize`).
`evaluate`, `predict`, `features`, `cam` and the NumPy engine all read this one file.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
import torch.nn as nn
from PIL import Image, UnidentifiedImageError
from safetensors.torch import save_file

from convnet.data.images import load_image, pil_to_tensor
from convnet.data.normalize import normalize
from convnet.errors import CheckpointError, ConfigError, ConvnetError, DataError
from convnet.files import atomic_write
from convnet.formats import MODEL_FORMAT as FORMAT
from convnet.formats import ModelInfo, check_weights_match, read_model_arrays
from convnet.inference.runtime import batched_logits
from convnet.models import create_model
from convnet.models.resnet import stem_of_weights


def save_model(path: str | Path, model: nn.Module, info: ModelInfo) -> None:
    state = {k: v.detach().to("cpu", torch.float32).contiguous()
             for k, v in model.state_dict().items() if v.is_floating_point()}
    # Integer buffers (BatchNorm's num_batches_tracked) are kept as they are.
    state.update({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if not v.is_floating_point()})
    atomic_write(Path(path), lambda tmp: save_file(state, tmp, metadata={"format": FORMAT, "convnet": info.to_json()}))


def read_model_file(path: str | Path) -> tuple[dict[str, torch.Tensor], ModelInfo]:
    """Read weights and metadata; raises `CheckpointError` with a one-sentence reason."""
    state, info, _ = read_model_arrays(path, "pt")
    return state, ModelInfo.from_dict(info)


class Classifier:
    """A trained model with its metadata: turns images into class probabilities."""

    def __init__(self, model: nn.Module, info: ModelInfo, device: str | torch.device = "cpu"):
        self.model = model.to(device).eval()
        self.info = info
        self.device = torch.device(device)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.info.classes

    def to_input(self, image) -> torch.Tensor:
        """A path, a Pillow image or a uint8 (C, H, W) tensor -> uint8 (C, H, W) at the model's size.

        Raises:
            DataError: a path that is missing or not a readable image, in one sentence.
        """
        size, chans = self.info.input_size, self.info.in_chans
        if isinstance(image, (str, Path)):
            try:
                return load_image(image, size, chans)
            except FileNotFoundError:
                raise DataError(f"There is no image file at {image}; check the path.") from None
            except (OSError, ValueError, Image.DecompressionBombError) as e:
                # Pillow's "cannot identify image file" only repeats the path; other reasons (truncated) help,
                # an OS error's without the path it names ("[Errno 6] ...: '<path>'").
                reason = ("" if isinstance(e, UnidentifiedImageError)
                          else f" ({e.strerror or e})" if isinstance(e, OSError) else f" ({e})")
                raise DataError(f"{image} is not a readable image{reason}; "
                                "pass a JPEG, PNG, BMP, GIF, WebP or TIFF file.") from None
        if isinstance(image, torch.Tensor):
            if image.dtype != torch.uint8 or tuple(image.shape) != (chans, *size):
                raise ValueError(f"a tensor image must be uint8 {(chans, *size)}, "
                                 f"got {image.dtype} {tuple(image.shape)}")
            return image
        return pil_to_tensor(image, size, chans)

    def model_input(self, image) -> torch.Tensor:
        """One image (see `to_input`) -> normalized float (1, C, H, W) on the model's device:
        what `viz.features` and `viz.cam` take."""
        return normalize(self.to_input(image)[None].to(self.device), self.info.mean, self.info.std)

    def logits(self, images: torch.Tensor, batch_size: int = 512, tta: int = 0) -> torch.Tensor:
        """uint8 (N, C, H, W) -> float32 logits (N, num_classes), in fp32, evaluated in batches.

        Batches are laid out channels-last, as training lays them out: the CPU's conv kernels run
        faster on them (benchmarks/results/inference_speed.json), and the logits differ from the
        contiguous layout's by float rounding only.
        """
        return batched_logits(self.model, images, self.info.mean, self.info.std, batch_size, tta=tta,
                              channels_last=True)

    def predict(self, images, tta: int = 0) -> torch.Tensor:
        """Class probabilities (N, num_classes) for a uint8 (N, C, H, W) tensor or a list of
        paths, Pillow images or (C, H, W) tensors."""
        if not isinstance(images, torch.Tensor):
            images = torch.stack([self.to_input(im) for im in images])
        return torch.softmax(self.logits(images, tta=tta), dim=1)


def build_model(info: ModelInfo) -> nn.Module:
    """The untrained architecture a model file describes (the one place a ModelInfo becomes a model).

    Raises:
        ConfigError: the model does not exist or refuses these arguments, input size or channels.
    """
    try:
        return create_model(info.model, num_classes=len(info.classes), in_chans=info.in_chans,
                            input_size=info.input_size, **info.model_args)
    except ConvnetError:
        raise
    except (TypeError, ValueError, RuntimeError, AttributeError) as e:  # a builder's own complaint about an argument
        args = ", ".join(f"{k}={v!r}" for k, v in info.model_args.items()) or "no arguments"
        raise ConfigError(f"The model {info.model!r} cannot be built with {args} for "
                          f"{info.in_chans}x{info.input_size[0]}x{info.input_size[1]} input ({e}).") from None


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Classifier:
    """Load a model file written by `convnet train` as a ready-to-use `Classifier`.

    Raises:
        CheckpointError: the file is not a usable convnet model (formats.read_model_arrays says
            what its metadata or tensors get wrong; here, what the built model disagrees with).
    """
    state, info = read_model_file(path)
    if info.model == "resnet":
        info = replace(info, model_args=stem_of_weights(info.model_args, state))
    try:
        with torch.device("meta"):  # shapes only: the file's arguments allocate nothing before they are checked
            expected = {name: tuple(t.shape) for name, t in build_model(info).state_dict().items()}
    except ConvnetError as e:  # build_model's one sentence: unknown model, bad argument, spec that does not fit
        raise CheckpointError(f"{path} describes a model convnet cannot build: {e}") from None
    check_weights_match(path, expected, state, info.model, len(info.classes), info.in_chans)
    model = build_model(info)
    model.load_state_dict(state)
    return Classifier(model, info, device)
