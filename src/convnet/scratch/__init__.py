"""The NumPy reference engine: the tutorial's CNN with every forward and backward pass written out.

It imports no torch. The API mirrors torch's (`Module.forward`, `parameters()`, `zero_grad()`,
`state_dict()`, `train()`/`eval()`, `optim.SGD`/`optim.Adam`), but each layer also has an explicit
`backward(grad)`. Networks are built from the same `convnet.spec.plan` as the torch ones and
read the same model files, so the two engines can be checked against each other.

    net, info = load_model_file("runs/x/model.safetensors")
    probs = predict(net, info, images_uint8)                  # (N, classes)
"""
from convnet.scratch.layers import (
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    Dropout,
    Flatten,
    GlobalAvgPool2d,
    Linear,
    MaxPool2d,
    Module,
    Parameter,
    ReLU,
    Sequential,
)
from convnet.scratch.losses import CrossEntropyLoss, softmax
from convnet.scratch.network import (
    SequentialNet,
    build_network,
    load_model_file,
    normalize,
    predict,
    predict_logits,
)
from convnet.scratch.optim import SGD, Adam
from convnet.scratch.train import evaluate, train_epoch

__all__ = [
    "Adam", "AvgPool2d", "BatchNorm1d", "BatchNorm2d", "Conv2d", "CrossEntropyLoss", "Dropout", "Flatten",
    "GlobalAvgPool2d", "Linear", "MaxPool2d", "Module", "Parameter", "ReLU", "SGD", "Sequential", "SequentialNet",
    "build_network", "evaluate", "load_model_file", "normalize", "predict", "predict_logits", "softmax", "train_epoch",
]
