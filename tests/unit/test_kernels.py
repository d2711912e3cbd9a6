"""Every trainer kernel against its plain reference in tests/naive.py."""
from __future__ import annotations

import numpy as np
import pytest

from tests import naive
from trainer import kernels as K
from trainer.model import Hyper, Optimizer, effective_weights
from trainer.progressive import histogram_auc, summarize

BITS = 8
CASES = {
    Optimizer.ADAGRAD: (K.adagrad_frame, naive.adagrad_frame, Hyper(Optimizer.ADAGRAD, lr=0.3, l2=0.01)),
    Optimizer.SGD: (K.sgd_frame, naive.sgd_frame, Hyper(Optimizer.SGD, lr=0.5, l2=0.001, decay=0.01)),
    Optimizer.FTRL: (K.ftrl_frame, naive.ftrl_frame,
                     Hyper(Optimizer.FTRL, lr=0.2, l2=0.5, l1=0.05, beta=1.0)),
}


def random_frame(rng, n, max_len=12, signed=False, weighted=False, bits=BITS):
    lens = rng.integers(0, max_len + 1, n)
    offsets = np.concatenate(([0], np.cumsum(lens))).astype(np.uint32)
    indices = rng.integers(0, 2 ** bits, int(offsets[-1])).astype(np.uint32)
    labels = rng.integers(0, 2, n).astype(np.uint8)
    values = (rng.choice([-1.0, 1.0], indices.shape[0]).astype(np.float32) if signed
              else np.zeros(0, np.float32))
    rweights = rng.uniform(0, 3, n).astype(np.float32) if weighted else np.zeros(0, np.float32)
    return labels, offsets, indices, values, rweights


def run_both(opt, frames, state0=None, bias0=None, t0=0.0):
    fast, slow, hyper = CASES[opt]
    state = np.zeros((2 ** BITS, 2), np.float32) if state0 is None else state0.copy()
    bias = np.zeros(2) if bias0 is None else bias0.copy()
    s_state, s_bias = state.copy(), bias.copy()
    stats, s_stats = np.zeros(K.STATS_LEN), np.zeros(K.STATS_LEN)
    hp = hyper.array()
    hp[K.HP_T] = t0
    for fr in frames:
        fast(state, bias, *fr, hp, stats)
        slow(s_state, s_bias, *fr, hp, s_stats)
        hp[K.HP_T] += len(fr[0])
    return (state, bias, stats), (s_state, s_bias, s_stats)


def assert_same(a, b):
    np.testing.assert_allclose(a[0], b[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(a[2][:K.HIST_POS], b[2][:K.HIST_POS], rtol=1e-6, atol=1e-7)
    for lo in (K.HIST_POS, K.HIST_NEG):
        ha, hb = a[2][lo:lo + K.N_BINS], b[2][lo:lo + K.N_BINS]
        assert ha.sum() == pytest.approx(hb.sum(), rel=1e-9)
        # A margin on a bin's edge (0.0 is one) may land on either side: the kernel's float32
        # update and float64 bias round within an ulp of the reference's. So the running counts
        # may differ by a record or two (weights < 3) at an edge, never more.
        assert np.abs(np.cumsum(ha) - np.cumsum(hb)).max() <= 6.0


@pytest.mark.parametrize("opt", list(Optimizer))
@pytest.mark.parametrize("signed,weighted", [(False, False), (True, False), (False, True), (True, True)])
def test_kernel_matches_naive_on_random_frames(opt, signed, weighted):
    rng = np.random.default_rng(7)
    frames = [random_frame(rng, int(rng.integers(1, 60)), signed=signed, weighted=weighted) for _ in range(6)]
    fast, slow = run_both(opt, frames)
    assert_same(fast, slow)
    assert fast[2][K.S_N] == sum(len(f[0]) for f in frames)


@pytest.mark.parametrize("opt", list(Optimizer))
@pytest.mark.parametrize("signed", [False, True])
def test_fixed_width_rows_and_runs_of_equal_length_match_naive(opt, signed):
    """Rows of one length (a fixed schema) take the interleaved prefetch of an equally long row;
    shorter, empty and longer rows take the burst before or after it."""
    rng = np.random.default_rng(11)
    labels = rng.integers(0, 2, 37).astype(np.uint8)
    lens = np.full(37, 20)
    lens[[5, 6, 17, 30]] = [3, 0, 25, 19]  # breaks a run of four, an empty row, longer next rows
    frames = []
    for widths in (np.full(37, 20), lens):
        offsets = np.concatenate(([0], np.cumsum(widths))).astype(np.uint32)
        indices = rng.integers(0, 2 ** BITS, int(offsets[-1])).astype(np.uint32)
        values = (rng.choice([-1.0, 1.0], indices.shape[0]).astype(np.float32) if signed
                  else np.zeros(0, np.float32))
        frames.append((labels, offsets, indices, values, np.zeros(0, np.float32)))
    fast, slow = run_both(opt, frames * 3)
    assert_same(fast, slow)
    assert fast[2][K.S_N] == 6 * 37


@pytest.mark.parametrize("opt", list(Optimizer))
def test_empty_frame_and_empty_records(opt):
    empty = (np.zeros(0, np.uint8), np.zeros(1, np.uint32), np.zeros(0, np.uint32),
             np.zeros(0, np.float32), np.zeros(0, np.float32))
    no_features = (np.array([1, 0, 1], np.uint8), np.zeros(4, np.uint32), np.zeros(0, np.uint32),
                   np.zeros(0, np.float32), np.zeros(0, np.float32))
    fast, slow = run_both(opt, [empty, no_features])
    assert_same(fast, slow)
    assert fast[2][K.S_N] == 3
    assert not fast[0].any()  # only the bias learned
    assert fast[1][0] != 0.0


@pytest.mark.parametrize("opt", list(Optimizer))
def test_repeated_indices(opt):
    offsets = np.array([0, 5, 8], np.uint32)
    indices = np.array([3, 3, 3, 7, 3, 7, 7, 1], np.uint32)
    fr = (np.array([1, 0], np.uint8), offsets, indices, np.zeros(0, np.float32), np.zeros(0, np.float32))
    fast, slow = run_both(opt, [fr] * 4)
    assert_same(fast, slow)


@pytest.mark.parametrize("opt", list(Optimizer))
def test_extreme_margins_stay_finite(opt):
    rng = np.random.default_rng(3)
    fr = random_frame(rng, 40)
    state = np.zeros((2 ** BITS, 2), np.float32)
    state[:, 0] = rng.choice([-500.0, 500.0], 2 ** BITS)
    state[:, 1] = 1.0
    fast, slow = run_both(opt, [fr], state0=state, bias0=np.array([300.0, 1.0]))
    assert np.isfinite(fast[0]).all() and np.isfinite(fast[2]).all()
    assert_same(fast, slow)


def test_zero_record_weight_learns_nothing():
    rng = np.random.default_rng(5)
    labels, offsets, indices, values, _ = random_frame(rng, 20)
    fast, _ = run_both(Optimizer.ADAGRAD, [(labels, offsets, indices, values, np.zeros(20, np.float32))])
    assert not fast[0].any() and fast[1][0] == 0.0 and fast[2][K.S_N] == 20


def test_histogram_auc_close_to_exact_auc():
    rng = np.random.default_rng(11)
    m = rng.normal(0, 2, 400)
    y = (rng.uniform(size=400) < 1 / (1 + np.exp(-m))).astype(float)
    stats = np.zeros(K.STATS_LEN)
    for mi, yi in zip(m, y):
        naive.observe(stats, float(mi), float(yi), 1.0)
    got = histogram_auc(stats[K.HIST_POS:K.HIST_POS + K.N_BINS], stats[K.HIST_NEG:K.HIST_NEG + K.N_BINS])
    assert got == pytest.approx(naive.binned_auc(m, y), abs=0.01)
    prog = summarize(stats)
    assert prog.records == 400 and 0 < prog.mean_prediction < 1


def test_learns_a_separable_signal():
    rng = np.random.default_rng(2)
    n = 4000
    offsets = np.arange(0, 2 * n + 1, 2, dtype=np.uint32)
    labels = rng.integers(0, 2, n).astype(np.uint8)
    indices = np.empty(2 * n, np.uint32)
    indices[0::2] = labels * 10 + 1
    indices[1::2] = rng.integers(20, 2 ** BITS, n)
    for opt, (fast, _, hyper) in CASES.items():
        state, bias, stats = np.zeros((2 ** BITS, 2), np.float32), np.zeros(2), np.zeros(K.STATS_LEN)
        fast(state, bias, labels, offsets, indices, np.zeros(0, np.float32), np.zeros(0, np.float32),
             hyper.array(), stats)
        w, b = effective_weights(hyper, state, bias)
        assert w[11] > 0 > w[1], opt
        assert summarize(stats).auc > 0.9, opt


def test_gather_sum_matches_naive():
    rng = np.random.default_rng(13)
    state = rng.normal(size=(2 ** BITS, 2)).astype(np.float32)
    idx = rng.integers(0, 2 ** BITS, 500).astype(np.uint32)
    assert K.gather_sum(state, idx) == pytest.approx(naive.gather_sum(state, idx), rel=1e-12)
    assert K.gather_sum(state, idx[:0]) == 0.0


@pytest.mark.parametrize("l1", [0.0, 0.05])
def test_ftrl_without_beta_or_l2_learns_from_a_fresh_state(l1):
    """``beta = l2 = 0``: a coordinate never learned has a zero denominator in FTRL's weight. The
    kernel computes the weight of every coordinate and selects 0 for it (no branch), so that
    division must neither raise nor leak into the margin."""
    hyper = Hyper(Optimizer.FTRL, lr=0.2, l2=0.0, l1=l1, beta=0.0)
    rng = np.random.default_rng(5)
    frames = [random_frame(rng, 40) for _ in range(3)]
    state, s_state = np.zeros((2 ** BITS, 2), np.float32), np.zeros((2 ** BITS, 2), np.float32)
    bias, s_bias = np.zeros(2), np.zeros(2)
    stats, s_stats = np.zeros(K.STATS_LEN), np.zeros(K.STATS_LEN)
    for fr in frames:
        K.ftrl_frame(state, bias, *fr, hyper.array(), stats)
        naive.ftrl_frame(s_state, s_bias, *fr, hyper.array(), s_stats)
    assert np.isfinite(state).all() and np.isfinite(stats).all()
    assert state[:, 1].any()  # it learned
    assert_same((state, bias, stats), (s_state, s_bias, s_stats))
