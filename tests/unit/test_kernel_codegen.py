"""The learning kernels' machine code keeps reference counting out of the record loop.

numba inserts ``NRT_incref``/``NRT_decref`` calls (each an atomic operation) for the arrays an
inlined helper touches when that helper has a branch it cannot prune around. Twice this cost
the kernels 4-8 % (an ``if`` in ``_ahead``) and 22-27 % (a margin loop split by ``if values``):
not a wrong result, so only the code itself shows it. A kernel compiled as it stands has four
call sites, all outside the record loop: its arguments' increfs at entry and decrefs at exit, and
the flat view of the state (``kernels._flat``) taken and released once per frame.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
from numba import config, njit

from trainer import kernels as K
from trainer.model import Hyper

MAX_NRT_CALLS = 4  # entry, exit, the flat view's pair; per-record counting showed 10-14

pytestmark = pytest.mark.skipif(config.DISABLE_JIT, reason="NUMBA_DISABLE_JIT: there is no machine code")


def _nrt_calls(name: str) -> list[str]:
    """The NRT functions the compiled kernel's own code calls, one entry per call site."""
    # a fresh, uncached compile: numba does not disassemble code loaded from its cache
    fn = njit(fastmath=K.FASTMATH, nogil=True)(getattr(K, name).py_func)
    state = np.zeros((1 << 10, 2), np.float32)
    fn(state, np.zeros(2), np.array([1, 0], np.uint8), np.array([0, 2, 3], np.uint32),
       np.array([1, 2, 5], np.uint32), K.EMPTY_F32, K.EMPTY_F32, Hyper().array(), np.zeros(K.STATS_LEN))
    assert state.any()  # it compiled and learned
    asm = next(iter(fn.inspect_asm().values()))
    body = asm.split("NRT_adapt_ndarray_from_python")[0]  # the kernel itself, not its Python wrapper
    assert "prefetchw" in body  # the kernel's record loop is in what we read
    return re.findall(r"\$(NRT_\w+)", body)


@pytest.mark.parametrize("name", ["adagrad_frame", "sgd_frame", "ftrl_frame"])
def test_no_reference_counting_in_the_record_loop(name: str) -> None:
    calls = _nrt_calls(name)  # values empty or not: one compiled signature covers both paths
    assert len(calls) <= MAX_NRT_CALLS, calls
