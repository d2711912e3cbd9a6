"""Transparent huge pages for the arrays the hot kernels read at random rows.

The trainer's model state (32 MiB at 2**22) is read and written at random rows. With 4 KiB pages
nearly every such access also misses the TLB, and in a virtual machine each miss is a two-level
page walk that itself misses the caches; 2 MiB pages cover 32 MiB with 16 TLB entries. Measured
here: random reads over a 2**22 state ran ~2x faster on huge pages, the AdaGrad kernel ~1.5x.

numpy already asks for huge pages for its own large arrays (so the scorer's weights and the
producer's value tables get them wherever ``/sys/kernel/mm/transparent_hugepage/enabled`` is
``madvise`` or ``always``); the trainer's ``/dev/shm`` block is a file mapping, which must ask
itself (:func:`advise`) and gets them only where that tmpfs is mounted ``huge=advise`` (or
``always``). It is a request, never a requirement: memory stays correct either way, and
:func:`huge_bytes` reports what the kernel actually granted, so services can log and export it.
"""
from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np

HUGE = 2 << 20  # x86-64 PMD page
_MIN_BYTES = HUGE  # smaller arrays fit a few 4 KiB TLB entries anyway
_SMAPS_KEYS = ("AnonHugePages:", "ShmemPmdMapped:", "FilePmdMapped:")


def advise(buf: mmap.mmap, start: int = 0, length: int | None = None) -> bool:
    """Ask for huge pages over ``buf[start:start + length]``; False where the OS refuses."""
    length = len(buf) - start if length is None else length
    if length < _MIN_BYTES or not hasattr(mmap, "MADV_HUGEPAGE"):
        return False
    try:
        buf.madvise(mmap.MADV_HUGEPAGE, start - start % mmap.PAGESIZE, length + start % mmap.PAGESIZE)
    except OSError:  # EINVAL: THP compiled out or disabled for this mapping
        return False
    return True


def huge_bytes(a: np.ndarray) -> int:
    """Bytes of the mappings under ``a`` that the kernel backs with huge pages right now (0 where
    ``/proc/self/smaps`` is unreadable). An array can span several mappings: numpy's own
    ``madvise`` of a large ``malloc`` block splits its first page off."""
    addr = a.__array_interface__["data"][0]
    end = addr + a.nbytes
    inside, total = False, 0
    try:
        lines = Path("/proc/self/smaps").read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
        head = line.split(None, 1)[0] if line else ""
        if "-" in head and not head.endswith(":"):
            lo, hi = (int(x, 16) for x in head.split("-"))
            inside = lo < end and addr < hi
        elif inside and head in _SMAPS_KEYS:
            total += int(line.split()[1]) * 1024
    return total


def tmpfs_mode(mount: str = "/dev/shm") -> str:
    """The ``huge=`` option in effect for a tmpfs mount point (the last mount listed wins);
    ``"none"`` where it is not mounted or ``/proc/mounts`` is unreadable."""
    mode = "none"
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return mode
    for line in lines:
        parts = line.split()
        if len(parts) > 3 and parts[1] == mount:
            opts = dict(o.split("=", 1) if "=" in o else (o, "") for o in parts[3].split(","))
            mode = opts.get("huge", "never")
    return mode
