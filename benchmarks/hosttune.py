"""The one host setting the trainer benchmark makes: ``/dev/shm`` mounted ``huge=advise``.

The trainer's model state lives in a ``/dev/shm`` block that every worker maps; tmpfs hands out
huge pages only where its mount allows them, and Linux mounts ``/dev/shm`` with ``huge=never``.
``huge=advise`` changes nothing for other programs (only mappings that ask with
``madvise(MADV_HUGEPAGE)`` get huge pages). Where the harness runs as root and the mount does not
already allow them, it remounts for the run, says so, and puts the old option back at exit.
``HASHBRIDGE_BENCH_HOST_TUNING=0`` leaves the host alone (the figures then show 4 KiB pages).
"""
from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from typing import Iterator

from shared import hugepages

SHM = "/dev/shm"


@contextmanager
def shm_huge_pages() -> Iterator[str]:
    """Yields how ``/dev/shm`` stood for the run, e.g. ``advise (set by the harness)``."""
    before = hugepages.tmpfs_mode(SHM)
    if before in ("advise", "always", "within_size") or before == "none":
        yield before
        return
    if os.environ.get("HASHBRIDGE_BENCH_HOST_TUNING", "1") == "0" or os.geteuid() != 0:
        yield f"{before} (not changed: not root or HASHBRIDGE_BENCH_HOST_TUNING=0)"
        return
    r = subprocess.run(["mount", "-o", "remount,huge=advise", SHM], capture_output=True, text=True)
    if r.returncode != 0:
        yield f"{before} (remount failed: {r.stderr.strip()})"
        return
    print(f"bench: remounted {SHM} with huge=advise for the trainer runs (was huge={before}); "
          "restored at exit", file=sys.stderr)
    try:
        yield "advise (set by the harness for the run)"
    finally:
        subprocess.run(["mount", "-o", f"remount,huge={before}", SHM], check=False)
