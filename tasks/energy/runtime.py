"""Process settings that keep energy and latency measurements repeatable.

glibc serves large allocations (a batch's activations: ~1 MB at batch 4096) with mmap and
adapts that threshold to the allocation history, so the same model on the same input ran
at 0.28 ms or 0.9 ms per batch depending on what the process had allocated before (page
faults on every call). Pinning the mmap and trim thresholds makes every candidate pay the
same allocator cost; a serving process would get the same from jemalloc or tcmalloc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
_done: bool | None = None


def stabilise_allocator(mmap_threshold_bytes: int = 256 * 1024 * 1024) -> bool:
    """Pin glibc's malloc thresholds once per process; False where there is no glibc."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _done = bool(libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold_bytes)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2 * mmap_threshold_bytes))
    return _done
