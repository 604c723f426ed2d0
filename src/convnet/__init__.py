"""convnet: train, check and serve small convolutional image classifiers.

    import convnet
    ds = convnet.load_dataset("sample", "train")
    result = convnet.train(convnet.TrainConfig(data="sample", epochs=3))
    clf = convnet.load_checkpoint(result.run_dir / "model.safetensors")
    probabilities = clf.predict(["cat.jpg"])
    print(convnet.format_report(convnet.evaluate(clf, convnet.load_dataset("sample", "test"))))

Names load lazily, so `import convnet` is quick and torch-free code (convnet.scratch) stays so.
docs/tutorial.ipynb uses nothing else.
"""
from importlib import import_module

__version__ = "0.1.0"

# public name -> "module" (the same name there) or "module:name" (published under another name)
_API = {
    # data
    "load_dataset": "convnet.data.sources",
    "Dataset": "convnet.data.dataset",
    # models
    "create_model": "convnet.models",
    "list_models": "convnet.models",
    "format_summary": "convnet.models.summary",
    # training
    "TrainConfig": "convnet.training.config",
    "train": "convnet.training.train",
    "resume": "convnet.training.train",
    "recipe_config": "convnet.training.recipes",
    "list_recipes": "convnet.training.recipes",
    # using a trained model
    "load_checkpoint": "convnet.inference.model_file",
    "Classifier": "convnet.inference.model_file",
    "evaluate": "convnet.inference.evaluate",
    "Evaluation": "convnet.inference.evaluate",
    "format_report": "convnet.inference.evaluate",
    # the worked example of one convolution (NumPy engine) and pictures
    "worked_example": "convnet.scratch.explain",
    "worked_example_text": "convnet.scratch.explain:render_text",
    "worked_example_figure": "convnet.viz.explain_figure",
    "image_grid": "convnet.viz.grid",
}
__all__ = list(_API)


def __getattr__(name: str):
    if name in _API:
        module, _, attribute = _API[name].partition(":")
        return getattr(import_module(module), attribute or name)
    raise AttributeError(f"module 'convnet' has no attribute {name!r}")
