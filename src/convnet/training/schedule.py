"""Learning-rate schedules as pure functions of the step."""
from __future__ import annotations


def lr_factor(step: int, total_steps: int, warmup_steps: int, kind: str) -> float:
    """Multiplier of the peak learning rate before optimizer step `step` (0-based).

    constant: 1 after the warm-up. linear: after the warm-up, a straight line down to 0 at
    `total_steps` (the schedule airbench and many fast CIFAR recipes use).
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "constant":
        return 1.0
    if kind == "linear":
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    raise ValueError(f"unknown schedule {kind!r}")
