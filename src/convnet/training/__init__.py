"""Training: the config and recipes, the epoch loop and its two engines (torch, NumPy), optimizers
and schedules, time budgets, torchrun, and the run folder with its resume state."""
