"""Process facts shared by the broker launcher and the trainer: is a pid alive, and how a child
asks Linux to be signalled when its parent dies (so no orphan outlives a killed owner)."""
from __future__ import annotations

import ctypes
import os
from typing import Callable

_PR_SET_PDEATHSIG = 1


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists (also when it belongs to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def parent_death_signal(sig: int) -> Callable[[], None] | None:
    """A call that makes the calling process receive ``sig`` when its parent dies (Linux), or
    None where prctl is missing. prctl is looked up here, so a ``preexec_fn`` built from it makes
    only one C call between fork and exec."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(_PR_SET_PDEATHSIG, sig)
