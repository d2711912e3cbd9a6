"""Keep freed frame-sized buffers in the C heap, so bulk scoring stops paying the kernel for memory.

Each bulk frame allocates MiB-sized buffers (the request payload copied out of librdkafka, the
reply being built, librdkafka's own fetch and produce buffers) and frees them a moment later.
With glibc's defaults the freed top of the heap is given back to the kernel (``brk`` shrink,
``munmap``) and the next frame faults the same pages in again, zero-filled: a profile of the bulk
loop showed ~30% of the serving thread's time in page faults, page clearing and unmapping.
Raising the trim and mmap thresholds keeps that memory in the process for reuse; the cost is that
the scorer's resident size stays near its peak instead of falling back between bursts.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_MAX = 32 * 1024 * 1024  # glibc's ceiling for M_MMAP_THRESHOLD on 64-bit


def keep_freed_memory(trim_bytes: int) -> bool:
    """Process-wide: keep up to ``trim_bytes`` freed at the heap top, and serve blocks up to 32 MiB
    from the heap instead of fresh mappings. False (and nothing changed) without glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        log.debug("no glibc mallopt: allocator left at its defaults")
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = bool(mallopt(_M_TRIM_THRESHOLD, trim_bytes)) and bool(mallopt(_M_MMAP_THRESHOLD, MMAP_MAX))
    if not ok:
        log.warning("mallopt refused the heap thresholds: allocator left (partly) at its defaults")
    return ok
