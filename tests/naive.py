"""Plain numpy/Python references for the trainer's numba kernels (slow, obviously correct).

Each mirrors the documented semantics of :mod:`trainer.kernels`: predict a row, record it, then
learn it coordinate by coordinate in order, in float64 arithmetic over float32 storage (AdaGrad's
coordinate update in float32 arithmetic, as its kernel). A row's margin is taken just before the
row in front of it is learned (a lead of one row, within a frame).
"""
from __future__ import annotations

import math

import numpy as np

from trainer.kernels import (HIST_NEG, HIST_POS, HP_BETA, HP_DECAY, HP_L1, HP_L2, HP_LR,
                             HP_T, MARGIN_RANGE, N_BINS, S_LOSS, S_N, S_P, S_W, S_Y)


def _rows(labels, offsets, indices, values, rweights):
    """[(i, y, record weight, indices, values)] of a frame."""
    rows = []
    for i in range(len(labels)):
        a, b = int(offsets[i]), int(offsets[i + 1])
        xs = [float(values[k]) if len(values) else 1.0 for k in range(a, b)]
        rows.append((i, float(labels[i]), (float(rweights[i]) if len(rweights) else 1.0),
                     [int(j) for j in indices[a:b]], xs))
    return rows


def _with_margins(rows, margin):
    """Each row with its margin, ``margin(row)`` called for row i + 1 before row i is yielded (and
    so before it is learned): the one-row lead of the kernels."""
    m_next = margin(rows[0]) if rows else 0.0
    for r, row in enumerate(rows):
        m = m_next
        if r + 1 < len(rows):
            m_next = margin(rows[r + 1])
        yield m, row


def observe(stats, m, y, rw):
    p = 1.0 / (1.0 + math.exp(-m)) if m >= 0 else math.exp(m) / (1.0 + math.exp(m))
    loss = -(y * math.log(max(p, 1e-300)) + (1 - y) * math.log(max(1 - p, 1e-300)))
    if abs(m) > 30:  # the log of a rounded p loses the tail; use the exact asymptote
        loss = max(m, 0.0) - y * m + math.log1p(math.exp(-abs(m)))
    stats[S_N] += 1
    stats[S_W] += rw
    stats[S_LOSS] += rw * loss
    stats[S_P] += rw * p
    stats[S_Y] += rw * y
    b = min(max(int(math.floor((m + MARGIN_RANGE) * N_BINS / (2 * MARGIN_RANGE))), 0), N_BINS - 1)
    stats[(HIST_POS if y > 0.5 else HIST_NEG) + b] += rw
    return p


def adagrad_frame(state, bias, labels, offsets, indices, values, rweights, hp, stats):
    lr, l2 = hp[HP_LR], hp[HP_L2]
    rows = _rows(labels, offsets, indices, values, rweights)
    for m, (_, y, rw, js, xs) in _with_margins(rows, lambda row: _plain_margin(state, bias, row)):
        g = (observe(stats, m, y, rw) - y) * rw
        if g == 0:
            continue
        f32 = np.float32
        for j, x in zip(js, xs):  # float32 arithmetic, as the kernel (deliberately, for speed)
            w = f32(state[j, 0])
            gi = f32(g) * f32(x) + f32(l2) * w
            acc = f32(state[j, 1]) + gi * gi
            state[j, 1] = acc
            if acc > 0:
                state[j, 0] = w - f32(lr) * gi / np.sqrt(acc)
        bias[1] += g * g
        bias[0] -= lr * g / math.sqrt(bias[1])


def _plain_margin(state, bias, row):
    return _sum_from(bias[0], (float(state[j, 0]) * x for j, x in zip(row[3], row[4])))


def _sum_from(m, terms):
    """``m`` plus the terms in order, as the kernels add them (a histogram bin can hinge on it)."""
    for t in terms:
        m += t
    return m


def sgd_frame(state, bias, labels, offsets, indices, values, rweights, hp, stats):
    lr0, l2, decay, t0 = hp[HP_LR], hp[HP_L2], hp[HP_DECAY], hp[HP_T]
    rows = _rows(labels, offsets, indices, values, rweights)
    for m, (i, y, rw, js, xs) in _with_margins(rows, lambda row: _plain_margin(state, bias, row)):
        g = (observe(stats, m, y, rw) - y) * rw
        lr = lr0 / (1 + decay * (t0 + i))
        if g == 0:
            continue
        for j, x in zip(js, xs):
            w = float(state[j, 0])
            state[j, 0] = np.float32(w - lr * (g * x + l2 * w))
        bias[0] -= lr * g


def ftrl_w(z, n, alpha, beta, l1, l2):
    if abs(z) <= l1:
        return 0.0
    return -(z - math.copysign(l1, z)) / ((beta + math.sqrt(n)) / alpha + l2)


def ftrl_frame(state, bias, labels, offsets, indices, values, rweights, hp, stats):
    alpha, beta, l1, l2 = hp[HP_LR], hp[HP_BETA], hp[HP_L1], hp[HP_L2]

    def margin(row):
        return _sum_from(ftrl_w(bias[0], bias[1], alpha, beta, 0, 0), (
            ftrl_w(float(state[j, 0]), float(state[j, 1]), alpha, beta, l1, l2) * x for j, x in zip(row[3], row[4])))

    for m, (_, y, rw, js, xs) in _with_margins(_rows(labels, offsets, indices, values, rweights), margin):
        g = (observe(stats, m, y, rw) - y) * rw
        if g == 0:
            continue
        for j, x in zip(js, xs):
            z, n = float(state[j, 0]), float(state[j, 1])
            w = ftrl_w(z, n, alpha, beta, l1, l2)
            gi = g * x
            sigma = (math.sqrt(n + gi * gi) - math.sqrt(n)) / alpha
            state[j, 0] = np.float32(z + gi - sigma * w)
            state[j, 1] = np.float32(n + gi * gi)
        bw = ftrl_w(bias[0], bias[1], alpha, beta, 0, 0)
        sigma = (math.sqrt(bias[1] + g * g) - math.sqrt(bias[1])) / alpha
        bias[0] += g - sigma * bw
        bias[1] += g * g


def gather_sum(state, indices):
    return sum(float(state[int(j), 0]) for j in indices)


def binned_auc(scores, labels, weights=None):
    """Exact AUC by ranks (ties count one half), for checking the histogram AUC."""
    s, y = np.asarray(scores, float), np.asarray(labels, float)
    w = np.ones_like(s) if weights is None else np.asarray(weights, float)
    pos, neg = 0.0, 0.0
    for i in range(len(s)):
        for k in range(len(s)):
            if y[i] > 0.5 and y[k] < 0.5:
                pos += w[i] * w[k] * (1.0 if s[i] > s[k] else 0.5 if s[i] == s[k] else 0.0)
                neg += w[i] * w[k]
    return pos / neg if neg else float("nan")
