"""Every recipe runs on other data shapes than CIFAR-10's without crashing or mis-shaping."""
import dataclasses

import numpy as np
import pytest
from PIL import Image

from convnet.errors import ConfigError
from convnet.inference.model_file import load_checkpoint
from convnet.training.recipes import RECIPES, list_recipes, recipe_config


def _folder(root, size, mode):
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(6):
            shape = (size, size) if mode == "L" else (size, size, 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(root / c / f"{i}.png")
    return root


@pytest.mark.parametrize("recipe", list_recipes())
@pytest.mark.parametrize("size, mode", [(64, "RGB"), (28, "L")])
def test_recipe_trains_on_other_sizes_and_channels(recipe, size, mode, tmp_path):
    from convnet.training.train import train

    data = _folder(tmp_path / "data", size, mode)
    base = recipe_config(recipe)
    small = {"widths": (8, 16, 16)} if base.model == "airnet" else {}
    config = dataclasses.replace(base, data=str(data), epochs=1, batch_size=4, val_split=0.25,
                                 runs_dir=str(tmp_path / "runs"), name="r", model_args={**base.model_args, **small},
                                 warmup_epochs=0.5)
    result = train(config, progress=False)
    clf = load_checkpoint(result.run_dir)
    assert clf.info.input_size == (size, size) and clf.info.in_chans == (1 if mode == "L" else 3)
    probs = clf.predict(sorted((data / "a").iterdir())[:2], tta=base.tta)
    assert probs.shape == (2, 2) and np.allclose(probs.sum(1).numpy(), 1, atol=1e-5)


def test_tutorial_recipe_is_the_tutorial():
    c = RECIPES["tutorial"]
    assert (c.model, c.optimizer, c.lr, c.epochs, c.batch_size, c.label_smoothing, c.normalize) == (
        "tutorial", "adam", 1e-3, 10, 32, 0.0, "unit")
    assert c.augment.flip == "none" and not c.augment.translate and not c.augment.cutout


def test_overrides_apply_and_unknown_recipes_are_refused():
    assert recipe_config("fast", epochs=3).epochs == 3
    with pytest.raises(ConfigError, match="tutorial-fast"):
        recipe_config("fastest")
