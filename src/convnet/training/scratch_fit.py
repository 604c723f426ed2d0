"""`convnet train --engine scratch`: the NumPy reference engine inside the usual run loop.

Same data, progress bar, history and run folder as the torch engine; the model file is written
through the torch model of the same spec, so `evaluate`, `predict`, `features` and `cam` read it as
any other. It trains tutorial and spec networks in float32 with Adam or SGD at a constant rate.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from convnet.data.dataset import Dataset
from convnet.errors import ConfigError
from convnet.inference.model_file import build_model, save_model
from convnet.scratch import network, optim
from convnet.scratch.train import evaluate, train_epoch
from convnet.spec import TUTORIAL_SPEC
from convnet.training.config import TrainConfig
from convnet.training.loop import EpochLoop, TrainData, TrainingDiverged, model_info
from convnet.training.run_folder import RunFolder


def _check(config: TrainConfig) -> str:
    """The spec string to build, after refusing what the NumPy engine does not do."""
    if config.model not in ("tutorial", "spec"):
        raise ConfigError(f"--engine scratch trains the tutorial and --arch networks, not {config.model!r}; "
                          "use --engine torch.")
    unsupported = [
        flag for flag, off in (("--schedule", config.schedule == "constant"),
                               ("--warmup-epochs", config.warmup_epochs == 0),
                               ("--ema", config.ema == 0), ("--label-smoothing", config.label_smoothing == 0),
                               ("--flip/--translate/--cutout",
                                config.augment.flip == "none" and not config.augment.translate
                                and not config.augment.cutout),
                               ("--tta", config.tta == 0), ("--whiten-bias-epochs", config.whiten_bias_epochs == 0),
                               ("--time-budget", config.time_budget is None),
                               ("--last-epoch-steps", config.last_epoch_steps == 0),
                               ("--weight-decay with adam", config.optimizer == "sgd" or config.weight_decay == 0))
        if not off
    ]
    if unsupported:
        raise ConfigError(f"--engine scratch does not support {', '.join(unsupported)}; "
                          "drop them or use --engine torch.")
    return config.model_args.get("arch", TUTORIAL_SPEC) if config.model == "spec" else TUTORIAL_SPEC


def _float_images(images: torch.Tensor, mean, std) -> np.ndarray:
    return network.normalize(images.numpy(), mean, std, dtype=np.float32)


class ScratchTrainer(EpochLoop):
    def __init__(self, config: TrainConfig, data: TrainData, run: RunFolder, progress: bool):
        super().__init__(config, data, run, progress)
        spec = _check(config)
        if not isinstance(data.train, Dataset) or not (data.val is None or isinstance(data.val, Dataset)):
            raise ConfigError("--engine scratch holds its images in memory, and this folder streams (--stream, or "
                              "larger than the memory budget); use --engine torch.")
        c, h, w = data.train.image_shape
        self.net = network.build_network(spec, len(data.train.classes), c, (h, w), dtype=np.float32,
                                         rng=np.random.default_rng(config.seed))
        if config.optimizer == "adam":
            # eps as in the torch engine (Keras's 1e-7), so both engines train the same recipe.
            self.optimizer = optim.Adam(self.net.parameters(), lr=config.lr, eps=1e-7, weight_decay=config.weight_decay)
        else:
            self.optimizer = optim.SGD(self.net.parameters(), lr=config.lr, momentum=config.momentum,
                                       weight_decay=config.weight_decay, nesterov=True)
        self.x, self.y = _float_images(data.train.images, data.mean, data.std), data.train.labels.numpy()
        self.val = (None if data.val is None
                    else (_float_images(data.val.images, data.mean, data.std), data.val.labels.numpy()))
        self.torch_model = build_model(model_info(config, data, {}))

    lr = property(lambda self: self.config.lr)

    def train_epoch(self, epoch: int, max_steps: int | None = None) -> tuple[float, float, float]:
        assert max_steps is None, "--last-epoch-steps is refused with the config, above"
        rng = np.random.default_rng([self.config.seed, epoch])
        bar, start = self.progress_bar(epoch), time.perf_counter()
        seen = {"n": 0, "loss": 0.0, "hits": 0.0}

        def on_batch(n: int, loss: float, acc: float) -> None:
            seen["n"] += n
            seen["loss"] += loss * n
            seen["hits"] += acc * n
            bar.set_postfix(loss=f"{seen['loss'] / seen['n']:.3f}", acc=f"{seen['hits'] / seen['n']:.3f}",
                            refresh=False)
            bar.update(n)

        # One BLAS thread: the engine's matrix products are small, and OpenBLAS threads that
        # spin-wait for a busy core cost more than they share on products this small.
        with threadpool_limits(1, "blas"):
            loss, acc = train_epoch(self.net, self.optimizer, self.x, self.y, self.config.batch_size, rng, on_batch)
        bar.close()
        if not np.isfinite(loss):
            raise TrainingDiverged(f"The loss became {loss} in epoch {epoch + 1}; "
                                   f"the last good checkpoint is kept in {self.run.path}; lower --lr.")
        return loss, acc, time.perf_counter() - start

    def validate(self, tta: int = 0):
        if self.val is None:
            return None, None
        with threadpool_limits(1, "blas"):
            return evaluate(self.net, *self.val, batch_size=256)

    def save_model(self, metrics: dict) -> None:
        state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.net.state_dict().items()}
        self.torch_model.load_state_dict(state)
        save_model(self.run.model_path, self.torch_model, model_info(self.config, self.data, metrics))

    def save(self, epoch: int) -> None:
        self.save_model(self.history[-1])
        self.run.write_history(self.history)
