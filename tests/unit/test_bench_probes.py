"""The benchmark's probe kernels measure what they claim: checked against plain numpy."""
from __future__ import annotations

import numpy as np

from benchmarks import probes


def _rows(rng: np.random.Generator, n: int, bits: int) -> tuple[np.ndarray, np.ndarray]:
    lens = rng.integers(0, 25, n)
    offsets = np.concatenate(([0], np.cumsum(lens))).astype(np.uint32)
    return offsets, rng.integers(0, 1 << bits, int(offsets[-1])).astype(np.uint32)


def test_margins_only_sums_every_rows_weights() -> None:
    rng = np.random.default_rng(3)
    state = rng.normal(0, 1, (1 << 10, 2)).astype(np.float32)
    offsets, indices = _rows(rng, 200, 10)
    want = sum(float(state[indices[a:b], 0].astype(np.float64).sum()) for a, b in zip(offsets[:-1], offsets[1:]))
    assert np.isclose(probes.margins_only(state, offsets, indices), want, rtol=1e-9)


def test_updates_only_matches_a_plain_adagrad_step_per_coordinate() -> None:
    rng = np.random.default_rng(4)
    state = np.column_stack([rng.normal(0, 0.1, 1 << 8), rng.uniform(0.5, 2, 1 << 8)]).astype(np.float32)
    offsets, indices = _rows(rng, 100, 8)  # small table: repeated coordinates, in order
    labels = rng.integers(0, 2, 100).astype(np.uint8)
    want = state.astype(np.float64)
    for i in range(100):
        g = float(labels[i]) - 0.5
        for j in indices[offsets[i]:offsets[i + 1]]:
            want[j, 1] += g * g
            want[j, 0] -= 0.1 * g / np.sqrt(want[j, 1])
    probes.updates_only(state, labels, offsets, indices)
    np.testing.assert_allclose(state, want, rtol=1e-5, atol=1e-6)


def test_touch_rows_writes_every_coordinate_without_changing_real_values() -> None:
    rng = np.random.default_rng(5)
    state = np.column_stack([rng.normal(0, 1, 1 << 12), rng.uniform(0.5, 2, 1 << 12)]).astype(np.float32)
    zero = np.zeros_like(state)
    indices = rng.integers(0, 1 << 12, 5000).astype(np.uint32)
    before = state.copy()
    probes.touch_rows(state, indices)
    probes.touch_rows(zero, indices)
    np.testing.assert_array_equal(state, before)  # 1e-30 is below the accumulators' resolution
    touched = np.zeros(1 << 12, bool)
    touched[indices] = True
    assert (zero[touched, 1] > 0).all() and (zero[~touched, 1] == 0).all()  # each one written, no other
    assert (zero[:, 0] == 0).all()
