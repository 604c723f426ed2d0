"""The acceptance check: a trained tutorial checkpoint gives the same answers in both engines
on real CIFAR-10 images (the 2,500 of the embedded sample)."""
import numpy as np
import torch

from convnet.data.sources import load_dataset
from convnet.inference.model_file import load_checkpoint
from convnet.scratch.network import load_model_file, predict_logits
from convnet.training.config import TrainConfig
from convnet.training.train import train


def test_trained_tutorial_agrees_on_a_thousand_real_images(tmp_path):
    result = train(TrainConfig(data="sample", epochs=2, runs_dir=str(tmp_path), name="t"), progress=False)
    images = torch.cat([load_dataset("sample", "train").images[:500], load_dataset("sample", "test").images])  # 1,000
    torch_logits = load_checkpoint(result.run_dir).logits(images).numpy()
    net, info = load_model_file(result.run_dir / "model.safetensors", dtype=np.float32)
    scratch_logits = predict_logits(net, info, images.numpy())
    assert len(images) == 1000
    assert np.abs(scratch_logits - torch_logits).max() <= 1e-5 * max(1.0, np.abs(torch_logits).max())
    assert (scratch_logits.argmax(1) == torch_logits.argmax(1)).all()
