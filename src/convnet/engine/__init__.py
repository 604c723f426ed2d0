"""The training engine: train loop, evaluation, prediction and the model file format."""
