"""What `convnet serve` is told: one frozen dataclass, checked when it is made (the CLI builds it)."""
from __future__ import annotations

import os
from dataclasses import dataclass

from convnet.errors import ConfigError

MB = 1_000_000  # bytes; uploads are limited in decimal megabytes, as browsers and curl report sizes


@dataclass(frozen=True)
class ServeConfig:
    max_upload_mb: float = 10.0  # largest request body (all files of one upload together); larger -> 413
    max_pixels: int = 40_000_000  # largest width x height of one image, read from its header before decoding; larger -> 413
    batch_wait_ms: float = 2.0  # under load, how long a batch waits for more /predict requests before it runs
    max_batch: int = 64  # most images in one forward pass
    # torch intra-op threads per forward pass; 0: half the cores this process may use, at least 1.
    # Not torch's default (every core): a server's cores also parse requests, decode uploads and run
    # other requests' passes, and intra-op threads that wait on a busy core stall the whole batch.
    threads: int = 0

    def __post_init__(self):
        checks = {
            "--max-upload-mb": self.max_upload_mb > 0,
            "--max-pixels": self.max_pixels >= 1,
            "--batch-wait-ms": self.batch_wait_ms >= 0,
            "--max-batch": self.max_batch >= 1,
            "--threads": self.threads >= 0,
        }
        for flag, ok in checks.items():
            if not ok:
                raise ConfigError(f"{flag} is out of range; pass a positive number (0 is allowed for --batch-wait-ms and --threads).")

    @property
    def torch_threads(self) -> int:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return self.threads or max(1, cores // 2)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MB)
