"""Process settings that keep energy and latency measurements repeatable.

glibc serves large allocations (a batch's activations: ~1 MB at batch 4096) with mmap and
adapts that threshold to the allocation history, so the same model on the same input ran
at 0.28 ms or 0.9 ms per batch depending on what the process had allocated before (page
faults on every call). Pinning the mmap and trim thresholds makes every candidate pay the
same allocator cost; a serving process would get the same from jemalloc or tcmalloc.

Inference runs at a fixed number of threads (`measurement.inference_threads`, one by default). On
the 2-core machine two intra-op threads made the same pair of models (the paper MLP and its fused
50 %-pruned copy, batch 4096, ABBA pairs with CodeCarbon) read 0.40, 0.45, 0.46 and 0.50x in four
fresh processes, each with a 95 % interval of +-4-8 %: which thread got which core, and what else the
hypervisor ran, moved whole runs. One thread read 0.50, 0.50, 0.50 and 0.52x, and cost fewer
core-seconds per prediction for both models (the baseline's batch: 0.67-0.86 ms on one core, 0.48-0.58 ms
on two).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
from collections.abc import Iterator
from contextlib import contextmanager

import torch

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
        _done = bool(libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold_bytes)) and bool(
            libc.mallopt(M_TRIM_THRESHOLD, 2 * mmap_threshold_bytes)
        )
    return _done


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op threads set to `threads` inside the block (0: left as they are), then put back."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if threads:
            torch.set_num_threads(before)
