"""Keep freed CPU memory for reuse instead of handing it back to the kernel after every batch.

glibc's malloc serves blocks over 32 MiB (a batch's activations: 126 MiB for airnet's first
group at batch 1024) with fresh mmap calls and unmaps them when freed, so every training step
page-faults its activations in again and the kernel zeroes each page (watch the minor-fault
count of `/usr/bin/time -v` on a training run). Raising the mmap threshold makes
malloc keep those blocks in its heap, where the next batch reuses them (the same fix as
PyTorch's CPU performance guide's jemalloc/tcmalloc advice, without a preloaded library).
Peak memory is unchanged; resident memory simply does not shrink between batches.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

_M_TRIM_THRESHOLD = -1  # from glibc's malloc.h
_M_MMAP_THRESHOLD = -3


@functools.cache
def keep_freed_memory(threshold: int = 2**30) -> bool:
    """Serve blocks below `threshold` bytes from malloc's heap and never trim it; True if applied.

    A no-op (False) where the C library is not glibc (macOS, Windows, musl).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
