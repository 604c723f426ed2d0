"""What `convnet serve` is told: one frozen dataclass, checked when it is made (the CLI builds it)."""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass

from convnet.errors import ConfigError

MB = 1_000_000  # bytes; uploads are limited in decimal megabytes, as browsers and curl report sizes


@dataclass(frozen=True)
class ServeConfig:
    max_upload_mb: float = 10.0  # largest request body (all files of one upload together); larger -> 413
    # largest width x height of one image, read from its header before decoding; larger -> 413
    max_pixels: int = 40_000_000
    # Most pixels one request may have decoded, all its files together, read from their headers
    # before any is decoded; more -> 413. A few of the largest images: without it, a small request
    # of 35-byte GIFs that each claim a 6000x6600 screen keeps the decoders busy for everyone.
    max_request_pixels: int = 100_000_000
    max_files: int = 64  # most files in one /predict request; more -> 413
    batch_wait_ms: float = 2.0  # under load, how long a batch waits for more /predict requests before it runs
    max_batch: int = 64  # most images in one forward pass
    # torch intra-op threads per forward pass; 0: half the cores this process may use, at least 1.
    # Not torch's default (every core): a server's cores also parse requests, decode uploads and run
    # other requests' passes, and intra-op threads that wait on a busy core stall the whole batch.
    threads: int = 0
    # The address the server listens on. On a loopback address, requests whose Host header names
    # another machine are refused (400): a web page elsewhere cannot reach it by DNS rebinding.
    host: str = "127.0.0.1"

    def __post_init__(self):
        checks = {
            "--max-upload-mb": self.max_upload_mb > 0,
            "--max-pixels": self.max_pixels >= 1,
            "--max-request-pixels": self.max_request_pixels >= 1,
            "--max-files": self.max_files >= 1,
            "--batch-wait-ms": self.batch_wait_ms >= 0,
            "--max-batch": self.max_batch >= 1,
            "--threads": self.threads >= 0,
        }
        for flag, ok in checks.items():
            if not ok:
                raise ConfigError(f"{flag} is out of range; pass a positive number (0 is allowed for --batch-wait-ms "
                                  "and --threads).")

    @property
    def torch_threads(self) -> int:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return self.threads or max(1, cores // 2)

    @property
    def loopback(self) -> bool:
        """Whether `host` answers this machine only (localhost, 127.x.x.x, ::1)."""
        try:
            return self.host == "localhost" or ipaddress.ip_address(self.host.strip("[]")).is_loopback
        except ValueError:  # a name other than localhost: it may resolve to any interface
            return False

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MB)
