"""Numba kernels of the scorer: plain arrays in, probabilities out; no Kafka, no settings.

Each is tested against a plain numpy version in ``tests/unit/test_scorer_scoring.py``. The model's
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
    """Logistic function without overflow for either sign of ``z``.

    Branch-free (one ``exp(-|z|)`` and a select): a branch on the sign of a margin mispredicts
    about every other record. Bit-identical to the two-branch form; ``predict_csr`` ran 1.08-1.09x
    faster over 1,000,000 rows of 20 indices at 2**20 weights (medians of 11 paired passes)."""
    e = math.exp(-abs(z))
    return (1.0 if z >= 0.0 else e) / (1.0 + e)


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


@njit(cache=CACHE, fastmath=FASTMATH, nogil=True)
def _pad_words(n_bytes: int) -> int:
    return ((n_bytes + 7) & ~7) // 4


@njit(cache=CACHE, fastmath=FASTMATH, nogil=True)
def serve_small_frames(words: np.ndarray, floats: np.ndarray, bounds: np.ndarray, head: np.ndarray,
                       weights: np.ndarray, bias: float, out_words: np.ndarray, out_probs: np.ndarray,
                       spans: np.ndarray) -> None:
    """Validate and score many small score frames laid end to end; write each one's prediction frame.

    ``words``/``floats`` are u32/f32 views of the same buffer: frame ``i`` is bytes
    ``bounds[i]:bounds[i+1]`` (each a multiple of 8). ``head`` is the reply header as ten u32
    words (magic, version/kind, the model's spec in words 2..4, model version in 8..9): a frame is
    scored only if it passes every check of the reference decoder (docs/wire-format.md §4) and its
    spec words equal the model's. Its reply goes to ``out_words`` from word ``spans[i, 0]``,
    ``spans[i, 1]`` words long (``out_probs`` is an f64 view of the same buffer), and
    ``spans[i, 2]`` is its record count; ``spans[i, 1] == 0`` marks a frame left to the reference
    path (which also says why it is refused). Sums run in the same order as ``predict_csr``.
    """
    bits = (head[2] >> 8) & 0xFF
    pos = 0
    for i in range(bounds.shape[0] - 1):
        spans[i, 0] = pos
        spans[i, 1] = 0
        spans[i, 2] = 0
        w0 = bounds[i] // 4
        size = bounds[i + 1] - bounds[i]
        if size < 40 or words[w0] != head[0]:
            continue
        w1 = words[w0 + 1]
        flags = w1 >> 16
        if (w1 & 0xFFFF) != 0x0201 or (flags != 0 and flags != 2):  # version 1, kind score
            continue
        if words[w0 + 2] != head[2] or words[w0 + 3] != head[3] or words[w0 + 4] != head[4]:
            continue
        n = np.int64(words[w0 + 5])
        nnz = np.int64(words[w0 + 6])
        o = w0 + 10 + _pad_words(8 * n)  # offsets
        x = o + _pad_words(4 * (n + 1))  # indices
        v = x + _pad_words(4 * nnz)  # values, if flagged
        end = v + (_pad_words(4 * nnz) if flags == 2 else 0)
        if end * 4 != bounds[i + 1]:
            continue
        good = words[o] == 0 and np.int64(words[o + n]) == nnz
        r = 0
        while good and r < n:
            good = words[o + r] <= words[o + r + 1]
            r += 1
        k = 0
        while good and k < nnz:
            good = (words[x + k] >> bits) == 0
            if flags == 2:
                good = good and math.isfinite(floats[v + k])
            k += 1
        if not good:
            continue
        for j in range(10):
            out_words[pos + j] = head[j]
        out_words[pos + 5] = n
        for j in range(2 * n):
            out_words[pos + 10 + j] = words[w0 + 10 + j]
        p = (pos + 10 + 2 * n) // 2
        for r in range(n):
            z = bias
            for k in range(words[o + r], words[o + r + 1]):
                if flags == 2:
                    z += weights[words[x + k]] * floats[v + k]
                else:
                    z += weights[words[x + k]]
            out_probs[p + r] = sigmoid(z)
        spans[i, 1] = 10 + 4 * n
        spans[i, 2] = n
        pos += 10 + 4 * n
