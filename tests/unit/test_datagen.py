"""The benchmark generator is deterministic and its known-best AUC is right (against a plain numpy AUC)."""
from __future__ import annotations

import numpy as np

from benchmarks import datagen


def _naive_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """P(score of a positive > score of a negative) + half the ties, over every pair."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / (pos.size * neg.size))


def test_generator_is_deterministic() -> None:
    a, b = datagen.synthetic(3_000, seed=7), datagen.synthetic(3_000, seed=7)
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.prob, b.prob)
    c = datagen.synthetic(3_000, seed=8)
    assert not np.array_equal(a.values, c.values)


def test_shapes_and_ranges() -> None:
    d = datagen.synthetic(2_000, seed=1)
    cards = datagen.cardinalities()
    assert cards[0] == 10 and cards[-1] == 1_000_000 and cards.shape == (20,)
    assert d.values.shape == (2_000, 20)
    assert (d.values >= 0).all() and (d.values < cards[None, :]).all()
    assert set(np.unique(d.labels)) <= {0, 1}
    assert d.n_train == 1_800
    # Zipf: the commonest value of the widest field is far above uniform frequency
    assert np.bincount(d.values[:, -1]).max() > 20


def test_best_auc_matches_naive_auc() -> None:
    d = datagen.synthetic(4_000, seed=3)
    s = d.split("test")
    assert abs(d.best_auc - _naive_auc(d.labels[s], d.prob[s])) < 1e-12
    assert 0.6 < d.best_auc < 0.95


def test_auc_handles_ties() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = rng.integers(0, 5, 500).astype(float)  # many ties
    assert abs(datagen.auc(y, s) - _naive_auc(y, s)) < 1e-12


def test_logloss_of_true_probabilities() -> None:
    y = np.array([1, 0, 1, 0])
    p = np.array([0.9, 0.2, 0.6, 0.5])
    want = -np.mean(np.log([0.9, 0.8, 0.6, 0.5]))
    assert abs(datagen.logloss(y, p) - want) < 1e-12
