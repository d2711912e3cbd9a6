"""Probe kernels that take the AdaGrad kernel apart, so the trainer benchmark can say where its
time goes: the row gathers alone (what a margin costs), the coordinate updates alone (the
read-modify-write with its square root and division, without prediction), and a bare
read-modify-write of every coordinate (what any learner that writes each one must pay). Not
used for learning.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from shared.prefetch import prefetch_write
from trainer.kernels import FASTMATH


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def margins_only(state, offsets, indices):
    """Every row's margin (row by row, no prefetch), summed so nothing is optimised away."""
    s = 0.0
    for i in range(offsets.shape[0] - 1):
        m = 0.0
        for k in range(offsets[i], offsets[i + 1]):
            m += float(state[indices[k], 0])
        s += m
    return s


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def updates_only(state, labels, offsets, indices):
    """AdaGrad's coordinate updates with a fixed gradient per row: no margin, no loss."""
    lr = np.float32(0.1)
    for i in range(offsets.shape[0] - 1):
        g = np.float32(labels[i]) - np.float32(0.5)
        for k in range(offsets[i], offsets[i + 1]):
            j = indices[k]
            acc = state[j, 1] + g * g
            state[j, 1] = acc
            state[j, 0] = state[j, 0] - lr * g / np.sqrt(acc)


TOUCH_AHEAD = 64  # prefetch distance in coordinates (best of 16-256 measured on this host)


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def touch_rows(state, indices):
    """Read and write back each coordinate's accumulator, with the kernel's write prefetch: the
    memory ceiling of a learner that must dirty every coordinate it touches. Adds 1e-30 (below
    float32 resolution at the accumulators' magnitude), so the values stay and the stores stay."""
    tiny = np.float32(1e-30)
    n = indices.shape[0]
    for k in range(n):
        if k + TOUCH_AHEAD < n:
            prefetch_write(state, indices[k + TOUCH_AHEAD])
        j = indices[k]
        state[j, 1] += tiny
