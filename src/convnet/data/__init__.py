"""Data sources as uint8 tensors: held in memory (`dataset.Dataset`), or streamed from the decode cache
when a folder is larger than memory (`streaming`)."""
