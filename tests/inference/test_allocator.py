"""keep_freed_memory, checked by glibc's own accounting of the memory it maps."""
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")

# Prints the bytes glibc holds in separately mmapped blocks while a 64 MiB array is alive.
_PROBE = """
import ctypes, sys
import numpy as np
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "tuned":
    from convnet.inference.allocator import keep_freed_memory
    assert keep_freed_memory()
block = np.ones(64 * 2**20, dtype=np.uint8)
print(libc.mallinfo2().hblkhd)
"""


def _mmapped_bytes(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], check=True, capture_output=True, text=True).stdout
    return int(out)


def test_large_blocks_come_from_the_heap_once_tuned():
    try:
        untuned = _mmapped_bytes("default")
    except subprocess.CalledProcessError:
        pytest.skip("not glibc (no mallinfo2)")
    assert untuned >= 64 * 2**20  # by default glibc maps a block this size on its own
    assert _mmapped_bytes("tuned") < 64 * 2**20  # tuned, it lives in (and returns to) the heap
