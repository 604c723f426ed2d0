"""Where a run folder keeps its files (training.run_folder writes them and documents the layout).

The readers that need no trainer, such as the server's model card, find the files here, so they
never import training.
"""
from __future__ import annotations

from pathlib import Path


class RunFiles:
    """The paths of the files in the run folder `path`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    config_path = property(lambda self: self.path / "config.json")
    history_path = property(lambda self: self.path / "history.csv")
    model_path = property(lambda self: self.path / "model.safetensors")
    state_path = property(lambda self: self.path / "state.safetensors")
    legacy_state_path = property(lambda self: self.path / "state.pt")
    curves_path = property(lambda self: self.path / "curves.png")
    plan_path = property(lambda self: self.path / "plan.json")
    samples_path = property(lambda self: self.path / "samples.png")
