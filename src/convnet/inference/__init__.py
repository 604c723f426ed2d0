"""Inference: the model file, running it (torch or onnxruntime) with test-time augmentation, and
what predict and evaluate report. It imports neither training nor export: a server that only
predicts never loads the trainer."""
