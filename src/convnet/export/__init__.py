"""Export: a trained model as an ONNX file or a Triton model repository entry. It reads models
through inference and never imports training."""
