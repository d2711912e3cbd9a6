"""Numba kernels of the scorer: plain arrays in, probabilities out; no Kafka, no settings.

Each is tested against a plain numpy version in ``tests/unit/test_scorer_kernels.py``. The model's
weight array is only read here, never written, so a swap to a newer model (a new array) is safe
between two calls.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

CACHE = True
FASTMATH = False  # keeps results within 1e-9 of numpy's summation


@njit(cache=CACHE, fastmath=FASTMATH, nogil=True)
def sigmoid(z: float) -> float:
    """Logistic function without overflow for either sign of ``z``."""
    if z >= 0.0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@njit(cache=CACHE, fastmath=FASTMATH, nogil=True)
def predict_csr(weights: np.ndarray, bias: float, offsets: np.ndarray, indices: np.ndarray,
                values: np.ndarray, out: np.ndarray) -> None:
    """``out[r] = sigmoid(bias + sum_k w[idx_k] * v_k)`` over row ``r``'s CSR slice.

    ``values`` is either empty (every feature has value 1) or one value per index.
    """
    use_values = values.shape[0] > 0
    for r in range(offsets.shape[0] - 1):
        z = bias
        for k in range(offsets[r], offsets[r + 1]):
            if use_values:
                z += weights[indices[k]] * values[k]
            else:
                z += weights[indices[k]]
        out[r] = sigmoid(z)
