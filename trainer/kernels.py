"""Numba kernels: one call learns one decoded frame (CSR rows) into the shared model arrays.

Only plain arrays and scalars cross this boundary. Every kernel has the same signature::

    kernel(state, bias, labels, offsets, indices, values, rweights, hp, stats)

* ``state``   float32[2**bits, 2]: one row per coordinate, the weight beside its optimizer
  accumulator (AdaGrad ``[w, g2]``, FTRL ``[z, n]``, SGD ``[w, unused]``) so one cache line
  serves both reads. Shared by all workers and written WITHOUT LOCKS (Hogwild, Niu et al. 2011):
  two workers may read-modify-write one coordinate at once and lose an update; with sparse hashed
  features collisions are rare and SGD tolerates them. With one worker the result is exact.
* ``bias``    float64[2]: the dedicated bias ``[b, acc]``. It is held in locals for the frame and
  merged back as a delta at the end, so workers do not bounce one cache line every record
  (a race between two such merges loses one frame's bias delta; accepted, documented).
* ``values``  float32[nnz] or empty: per-index signs of signed hashing (or opt-in raw numbers);
  empty means all ones. ``rweights`` float32[n] or empty: per-record weights; empty means ones.
* ``hp``      float64[HP_LEN] hyper-parameters (see ``HP_*``); ``stats`` float64[STATS_LEN], the
  calling worker's own progressive-validation row (no other writer).

Every record is predicted before it is learned (progressive validation): its histogram bin goes
to ``stats`` and its logloss and prediction to the frame's running sums, which reach ``stats``
when the call returns (a frame is the unit a checkpoint sees). Rows are scored and learned in
order, with a lead of one row: the margin of row ``i + 1`` is gathered just before row ``i`` is
learned, so a prediction sees every earlier update except that of the row just before it. That
lead lets the next row's gather and this row's ``exp`` run side by side instead of one after
the other (AdaGrad 1.02-1.04x over gathering groups of 8 margins first, at 2**14-2**22 weights;
medians of interleaved passes); it replaced groups whose later rows missed the updates of up to
7 rows before them.
The lead never spans frames: a frame's first row sees everything learned before the frame, so
the result depends only on the frames, not on how ``consume`` batches them. A repeated index in
one row is applied once per occurrence, in order, each seeing the previous occurrence's update.

While row ``i`` is learned, the kernels prefetch the coordinates of row ``i + AHEAD``, so those
cache misses overlap this row's arithmetic and the gather of row ``i + 1`` finds its lines in
cache. The prefetches are interleaved with the row's updates, one per coordinate, rather than
issued as a burst before them: the misses then stream at the pace of the updates instead of
queueing 20 at a time for the core's few miss buffers (measured 1.09-1.15x more at 2**16-2**22,
paired runs; bit-identical results).
AdaGrad's coordinate update runs in float32 (the storage type; float64 costs ~1.3x more in
sqrt/div). ``FASTMATH`` allows no-NaN/no-inf, reciprocal and contraction rewrites but never
reassociation, so a given compiled binary is deterministic (a killed-and-restarted run matches
bit for bit) and results stay within float32 rounding of the plain references.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from shared.prefetch import prefetch_write

CACHE = True
# deterministic for one compiled binary (no "reassoc": summation order is fixed), so restarts
# stay bit-exact; "arcp"/"afn" let x / sqrt(y) become a reciprocal-sqrt sequence
FASTMATH = {"nnan", "ninf", "nsz", "arcp", "contract", "afn"}

AHEAD = 5  # rows between the row being learned and the row whose coordinates it prefetches
SETTLE = 8  # unweighted records whose 1 + e go into one product before its log is taken

# hyper-parameter slots
HP_LR, HP_L2, HP_L1, HP_BETA, HP_DECAY, HP_T, HP_EPS = range(7)
HP_LEN = 8

# progressive-validation row: scalars, then a margin histogram of positives and of negatives
S_N, S_W, S_LOSS, S_P, S_Y = range(5)
N_BINS = 1024
MARGIN_RANGE = 16.0  # histogram covers margins in [-16, 16); outside goes to the end bins
HIST_POS = 8
HIST_NEG = HIST_POS + N_BINS
STATS_LEN = HIST_NEG + N_BINS


@njit(cache=CACHE, fastmath=FASTMATH, inline="always")
def _flat(state):
    """``state`` as one float32 row: coordinate ``j`` at ``[2j, 2j + 1]`` (see ``_at``)."""
    return state.reshape(state.shape[0] * 2)


@njit(cache=CACHE, fastmath=FASTMATH, inline="always")
def _at(indices, k):
    """Where coordinate ``indices[k]`` starts in the flat state. Plain ``2 * j``: numba keeps a
    2-D array's row stride a runtime value, so ``state[j, 0]`` paid an integer multiply on every
    access (bit-identical results; 1.09x at 2**14 and 1.11x at 2**18 weights, where the loads hit
    the cache; equal at 2**22, where memory decides)."""
    return 2 * np.intp(indices[k])


@njit(cache=CACHE, fastmath=FASTMATH, inline="always")
def _prefetch_span(flat, indices, a, b):
    """Start loading the coordinates ``indices[a:b]`` without waiting for them."""
    for k in range(a, b):
        prefetch_write(flat, _at(indices, k))


@njit(cache=CACHE, fastmath=FASTMATH, inline="always")
def _prefetch_rows(state, indices, a, b):
    """``_prefetch_span`` over the 2-D state, for FTRL, which stays on ``state[j, 0]``
    addressing: on the flat view it ran 0.68x at 2**22 weights and 0.87x at 2**18 (0.98x when
    cache-resident), though its results were the same; not understood yet, so not taken."""
    for k in range(a, b):
        prefetch_write(state, indices[k])


@njit(cache=CACHE, fastmath=FASTMATH, inline="always")
def _ahead(offsets, i, n):
    """The index span of row ``i + AHEAD`` (empty past the frame): the row prefetched while row
    ``i`` is learned. Returned as plain ints, with the shift from row ``i``'s span.

    Branch-free on purpose: with an ``if`` here numba kept an incref/decref pair of ``offsets``
    (two calls, two atomic operations) in every record's path; without it the kernel ran 1.04x
    faster at 2**22 weights and 1.08x at 2**18 (medians of 21 interleaved passes)."""
    j = min(i + AHEAD, n)
    nb = int(offsets[j])
    return nb, int(offsets[min(j + 1, n)]), nb - int(offsets[i])


@njit(cache=CACHE, fastmath=FASTMATH, inline="always")
def _observe(stats, m, y, rw, has_w, tally):
    """Score one record before learning it; returns ``(p, tally)``.

    ``tally`` holds the frame's running sums in registers, ``(weight, loss, p, y, product)``,
    written to ``stats`` once by ``_flush`` (five loads and stores a record less). A record's
    loss is ``log(1 + e) + lin``; unweighted records multiply their ``1 + e`` (each in (1, 2])
    into ``product``, whose log ``_settle`` adds once per SETTLE rows: one log for up to SETTLE records
    instead of one each, within 1e-15 of the sum of logs. Together 1.04x at 2**22 weights and
    1.08x at 2**18 (medians of 15 interleaved passes). The loss uses ``log(1 + e)``, not
    ``log1p(e)``: with ``0 < e <= 1`` the sum ``1 + e`` loses at most 1.1e-16 of the loss
    (absolute), while libm's log1p cost about twice log here.

    Branch-free: the sign of a margin is a coin flip to the branch predictor, and a branch on it
    (one ``exp`` call per sign) mispredicted about every other record, throwing away the work the
    core had started ahead, prefetches included. One ``exp(-|m|)`` and selects instead:
    bit-identical results, AdaGrad 1.02-1.055x at 2**22 weights (median 1.04x over five paired
    sets) and 1.06-1.08x at 2**14, SGD 1.03x, FTRL equal (medians of 9-13 interleaved passes)."""
    e = math.exp(-abs(m))  # in (0, 1]: the stable form for either sign of m
    d = 1.0 + e
    p = (1.0 if m >= 0.0 else e) / d  # a select, not a branch
    lin = max(m, 0.0) - y * m  # (1 - y) * m for m >= 0, -y * m below; exact for y in {0, 1}
    b = int(math.floor((m + MARGIN_RANGE) * (N_BINS / (2.0 * MARGIN_RANGE))))
    if b < 0:
        b = 0
    elif b >= N_BINS:
        b = N_BINS - 1
    if y > 0.5:
        stats[HIST_POS + b] += rw
    else:
        stats[HIST_NEG + b] += rw
    sw, loss, sp, sy, prod = tally
    if has_w:
        loss += rw * (math.log(d) + lin)
    else:
        loss += lin
        prod *= d
    return p, (sw + rw, loss, sp + rw * p, sy + rw * y, prod)


@njit(cache=CACHE, fastmath=FASTMATH, inline="always")
def _settle(tally):
    """Add the log of the product of ``1 + e`` to the loss (at most 2**SETTLE: no overflow)."""
    sw, loss, sp, sy, prod = tally
    return (sw, loss + math.log(prod), sp, sy, 1.0)


@njit(cache=CACHE, fastmath=FASTMATH, inline="always")
def _flush(stats, n, tally):
    """Add the frame's ``n`` records and running sums to the worker's ``stats`` row."""
    sw, loss, sp, sy, _ = tally
    stats[S_N] += n
    stats[S_W] += sw
    stats[S_LOSS] += loss
    stats[S_P] += sp
    stats[S_Y] += sy


TALLY0 = (0.0, 0.0, 0.0, 0.0, 1.0)


@njit(cache=CACHE, fastmath=FASTMATH, inline="always")
def _margin(flat, bias, offsets, indices, values, i):
    m = bias
    has_v = values.shape[0] > 0
    for k in range(offsets[i], offsets[i + 1]):
        x = float(values[k]) if has_v else 1.0
        m += float(flat[_at(indices, k)]) * x
    return m


@njit(cache=CACHE, fastmath=FASTMATH, inline="always")
def _next(i, n):
    """The row whose margin is gathered while row ``i`` is scored: ``i + 1``, or ``i`` itself for
    the frame's last row (a harmless re-read; branch-free for the reason ``_ahead`` gives)."""
    return min(i + 1, n - 1)


@njit(cache=CACHE, fastmath=FASTMATH, nogil=True)
def adagrad_frame(state, bias, labels, offsets, indices, values, rweights, hp, stats):
    """AdaGrad: per-coordinate rate ``lr / sqrt(sum g^2)``; L2 on the coordinates a row touches.

    The coordinate update is float32 arithmetic (the storage type); the bias stays float64.
    """
    lr, l2 = hp[HP_LR], hp[HP_L2]
    lr32, l2_32 = np.float32(lr), np.float32(l2)
    has_v, has_w = values.shape[0] > 0, rweights.shape[0] > 0
    b0, a0 = bias[0], bias[1]
    b, a = b0, a0
    n = labels.shape[0]
    flat = _flat(state)
    _prefetch_span(flat, indices, offsets[0], offsets[min(AHEAD, n)])
    m_next = _margin(flat, b, offsets, indices, values, 0) if n > 0 else 0.0
    tally = TALLY0
    for i in range(n):
        m = m_next
        m_next = _margin(flat, b, offsets, indices, values, _next(i, n))  # before row i is learned
        y = float(labels[i])
        rw = float(rweights[i]) if has_w else 1.0
        p, tally = _observe(stats, m, y, rw, has_w, tally)
        if (i & (SETTLE - 1)) == SETTLE - 1:  # SETTLE is a power of two
            tally = _settle(tally)
        g = (p - y) * rw
        a_, e_ = int(offsets[i]), int(offsets[i + 1])
        nb, ne, shift = _ahead(offsets, i, n)
        if g == 0.0:
            _prefetch_span(flat, indices, nb, ne)
            continue
        g32 = np.float32(g)
        if has_v:
            for k in range(a_, e_):
                if k + shift < ne:
                    prefetch_write(flat, _at(indices, k + shift))
                j = _at(indices, k)
                w = flat[j]
                gi = g32 * values[k] + l2_32 * w
                acc = flat[j + 1] + gi * gi
                flat[j + 1] = acc
                if acc > 0.0:
                    flat[j] = w - lr32 * gi / np.sqrt(acc)
        else:  # the common case, specialised: no per-index values
            for k in range(a_, e_):
                if k + shift < ne:
                    prefetch_write(flat, _at(indices, k + shift))
                j = _at(indices, k)
                w = flat[j]
                gi = g32 + l2_32 * w
                acc = flat[j + 1] + gi * gi
                flat[j + 1] = acc
                if acc > 0.0:
                    flat[j] = w - lr32 * gi / np.sqrt(acc)
        _prefetch_span(flat, indices, e_ + shift, ne)  # row i + AHEAD is the longer one
        a += g * g
        b -= lr * g / math.sqrt(a)
    _flush(stats, n, _settle(tally))
    bias[0] += b - b0
    bias[1] += a - a0


@njit(cache=CACHE, fastmath=FASTMATH, nogil=True)
def sgd_frame(state, bias, labels, offsets, indices, values, rweights, hp, stats):
    """Plain SGD, rate ``lr / (1 + decay * t)`` with ``t`` = records learned before this one."""
    lr0, l2, decay, t0 = hp[HP_LR], hp[HP_L2], hp[HP_DECAY], hp[HP_T]
    has_v, has_w = values.shape[0] > 0, rweights.shape[0] > 0
    b0 = bias[0]
    b = b0
    n = labels.shape[0]
    flat = _flat(state)
    _prefetch_span(flat, indices, offsets[0], offsets[min(AHEAD, n)])
    m_next = _margin(flat, b, offsets, indices, values, 0) if n > 0 else 0.0
    tally = TALLY0
    for i in range(n):
        m = m_next
        m_next = _margin(flat, b, offsets, indices, values, _next(i, n))
        y = float(labels[i])
        rw = float(rweights[i]) if has_w else 1.0
        p, tally = _observe(stats, m, y, rw, has_w, tally)
        if (i & (SETTLE - 1)) == SETTLE - 1:  # SETTLE is a power of two
            tally = _settle(tally)
        g = (p - y) * rw
        lr = lr0 / (1.0 + decay * (t0 + i))
        a_, e_ = int(offsets[i]), int(offsets[i + 1])
        nb, ne, shift = _ahead(offsets, i, n)
        if g == 0.0:
            _prefetch_span(flat, indices, nb, ne)
            continue
        for k in range(a_, e_):
            if k + shift < ne:
                prefetch_write(flat, _at(indices, k + shift))
            j = _at(indices, k)
            x = float(values[k]) if has_v else 1.0
            w = float(flat[j])
            flat[j] = w - lr * (g * x + l2 * w)
        _prefetch_span(flat, indices, e_ + shift, ne)
        b -= lr * g
    _flush(stats, n, _settle(tally))
    bias[0] += b - b0


@njit(cache=CACHE, fastmath=FASTMATH, inline="always")
def _ftrl_w(z, n, alpha, beta, l1, l2):
    """FTRL's weight of a coordinate, 0 inside the L1 ball. Computed for every coordinate and
    selected, not branched on: whether ``|z| <= l1`` is up to the data, so a branch mispredicts
    (bit-identical; 1.05x with ``l1 = 0`` and 1.02-1.04x with ``l1 = 1`` at 2**14-2**22
    weights, medians of 9 interleaved passes). The floor on the denominator only matters where it
    is 0 (``beta = l2 = 0`` and a coordinate never learned, so ``z = 0`` and 0 is selected): the
    division there must not raise."""
    s = 1.0 if z > 0.0 else -1.0
    w = -(z - s * l1) / max((beta + math.sqrt(n)) / alpha + l2, 1e-300)
    return w if abs(z) > l1 else 0.0


@njit(cache=CACHE, fastmath=FASTMATH, inline="always")
def _ftrl_margin(state, bw, offsets, indices, values, i, alpha, beta, l1, l2):
    has_v = values.shape[0] > 0
    m = bw
    for k in range(offsets[i], offsets[i + 1]):
        x = float(values[k]) if has_v else 1.0
        m += _ftrl_w(float(state[indices[k], 0]), float(state[indices[k], 1]), alpha, beta, l1, l2) * x
    return m


@njit(cache=CACHE, fastmath=FASTMATH, nogil=True)
def ftrl_frame(state, bias, labels, offsets, indices, values, rweights, hp, stats):
    """FTRL-Proximal (McMahan et al. 2013): ``state[j] = [z, n]``, w materialised on the fly.
    ``hp[HP_LR]`` is alpha. The bias follows the same rule without L1/L2.
    """
    alpha, beta, l1, l2 = hp[HP_LR], hp[HP_BETA], hp[HP_L1], hp[HP_L2]
    has_v, has_w = values.shape[0] > 0, rweights.shape[0] > 0
    z0, n0 = bias[0], bias[1]
    bz, bn = z0, n0
    n_rows = labels.shape[0]
    _prefetch_rows(state, indices, offsets[0], offsets[min(AHEAD, n_rows)])
    m_next = 0.0
    if n_rows > 0:
        m_next = _ftrl_margin(state, _ftrl_w(bz, bn, alpha, beta, 0.0, 0.0), offsets, indices, values, 0,
                              alpha, beta, l1, l2)
    tally = TALLY0
    for i in range(n_rows):
        m = m_next
        m_next = _ftrl_margin(state, _ftrl_w(bz, bn, alpha, beta, 0.0, 0.0), offsets, indices, values,
                              _next(i, n_rows), alpha, beta, l1, l2)
        y = float(labels[i])
        rw = float(rweights[i]) if has_w else 1.0
        p, tally = _observe(stats, m, y, rw, has_w, tally)
        if (i & (SETTLE - 1)) == SETTLE - 1:  # SETTLE is a power of two
            tally = _settle(tally)
        g = (p - y) * rw
        a_, e_ = int(offsets[i]), int(offsets[i + 1])
        nb, ne, shift = _ahead(offsets, i, n_rows)
        if g == 0.0:
            _prefetch_rows(state, indices, nb, ne)
            continue
        for k in range(a_, e_):
            if k + shift < ne:
                prefetch_write(state, indices[k + shift])
            j = indices[k]
            x = float(values[k]) if has_v else 1.0
            z, n = float(state[j, 0]), float(state[j, 1])
            w = _ftrl_w(z, n, alpha, beta, l1, l2)
            gi = g * x
            sigma = (math.sqrt(n + gi * gi) - math.sqrt(n)) / alpha
            state[j, 0] = z + gi - sigma * w
            state[j, 1] = n + gi * gi
        _prefetch_rows(state, indices, e_ + shift, ne)
        bw_now = _ftrl_w(bz, bn, alpha, beta, 0.0, 0.0)
        sigma = (math.sqrt(bn + g * g) - math.sqrt(bn)) / alpha
        bz += g - sigma * bw_now
        bn += g * g
    _flush(stats, n_rows, _settle(tally))
    bias[0] += bz - z0
    bias[1] += bn - n0


@njit(cache=CACHE, fastmath=FASTMATH, nogil=True)
def ftrl_weights(state, alpha, beta, l1, l2, out):
    """Materialise FTRL weights from ``[z, n]`` into ``out`` (float32[2**bits])."""
    for j in range(state.shape[0]):
        out[j] = _ftrl_w(float(state[j, 0]), float(state[j, 1]), alpha, beta, l1, l2)


@njit(cache=CACHE, fastmath=FASTMATH, nogil=True)
def predict_margins(w, bias, offsets, indices, values, out):
    """Margins of CSR rows under plain weights ``w`` (float32[2**bits]); for tests and tools."""
    has_v = values.shape[0] > 0
    for i in range(out.shape[0]):
        m = bias
        for k in range(offsets[i], offsets[i + 1]):
            m += float(w[indices[k]]) * (float(values[k]) if has_v else 1.0)
        out[i] = m


@njit(cache=CACHE, fastmath=FASTMATH, nogil=True)
def gather_sum(state, indices):
    """Sum of ``state[indices, 0]``: random reads alone, no learning. Benchmarks use it as the
    memory ceiling that any kernel reading and updating those coordinates stays under."""
    s = 0.0
    for k in range(indices.shape[0]):
        s += float(state[indices[k], 0])
    return s


EMPTY_F32 = np.zeros(0, np.float32)
