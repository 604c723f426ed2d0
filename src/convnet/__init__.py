"""convnet: train, check and serve small convolutional image classifiers.

    import convnet
    ds = convnet.load_dataset("sample", "train")
    result = convnet.train(convnet.TrainConfig(data="sample", epochs=3))
    clf = convnet.load_checkpoint(result.run_dir / "model.safetensors")
    probabilities = clf.predict(["cat.jpg"])

Names load lazily, so `import convnet` is quick and torch-free code (convnet.scratch) stays so.
"""
from importlib import import_module

__version__ = "0.1.0"

_API = {
    "load_dataset": "convnet.data.sources",
    "Dataset": "convnet.data.dataset",
    "create_model": "convnet.models",
    "list_models": "convnet.models",
    "TrainConfig": "convnet.engine.config",
    "train": "convnet.engine.train",
    "resume": "convnet.engine.train",
    "recipe_config": "convnet.engine.recipes",
    "list_recipes": "convnet.engine.recipes",
    "load_checkpoint": "convnet.engine.checkpoint",
    "evaluate": "convnet.engine.evaluate",
}
__all__ = list(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'convnet' has no attribute {name!r}")
