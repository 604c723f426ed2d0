"""Data sources loaded whole into memory as uint8 tensors (see `dataset.Dataset`)."""
