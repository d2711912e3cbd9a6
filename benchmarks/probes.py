"""Probe kernels that take the AdaGrad kernel apart, so the trainer benchmark can say where its
time goes: the row gathers alone (what a margin costs) and the coordinate updates alone (the
read-modify-write with its square root and division, without prediction). Not used for learning.
"""
from __future__ import annotations

import numpy as np
from numba import njit

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
