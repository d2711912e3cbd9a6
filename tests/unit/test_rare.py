"""Rare-value suppression: the columnar and record paths agree with a naive sliding window."""
from __future__ import annotations

import random

import numpy as np
import pytest

from producer.rare import RARE_TOKEN, RareSuppressor


def naive(values: list[str | None], k: int, window: int) -> list[str | None]:
    out = []
    for i, v in enumerate(values):
        count = values[max(0, i - window + 1): i + 1].count(v)
        out.append(v if k <= 1 or v is None or count >= k else RARE_TOKEN)
    return out


def _stream(rng: random.Random, n: int) -> list[str | None]:
    return [rng.choice(["a", "b", "c", None, str(rng.randint(0, 40))]) for _ in range(n)]


@pytest.mark.parametrize("seed", range(30))
def test_batches_records_and_mixtures_match_the_naive_window(seed: int) -> None:
    rng = random.Random(seed)
    k = rng.randint(0, 6)
    window = rng.randint(max(k, 1), 40)
    values = _stream(rng, rng.randint(0, 300))
    expected = naive(values, k, window)
    one = RareSuppressor(k, window)
    assert [one.apply_one("f", v) for v in values] == expected
    mixed, got, i = RareSuppressor(k, window), [], 0
    while i < len(values):
        if rng.random() < 0.3:
            got.append(mixed.apply_one("f", values[i]))
            i += 1
        else:
            b = rng.randint(1, 60)
            got += mixed.apply("f", values[i:i + b]).tolist()
            i += b
    assert got == expected


def test_fields_are_independent_and_deterministic() -> None:
    a, b = RareSuppressor(2, 10), RareSuppressor(2, 10)
    for sup in (a, b):
        sup.apply("x", ["p", "p", "q"])
        sup.apply("y", ["q", "r"])
    assert a.apply("x", ["q"]).tolist() == ["q"]  # second q within the window of field x
    assert a.apply("y", ["p"]).tolist() == [RARE_TOKEN]  # p was never seen in field y
    assert b.apply("x", ["q"]).tolist() == ["q"] and b.apply("y", ["p"]).tolist() == [RARE_TOKEN]


def test_keep_dictionary_reads_pyarrow_style_codes() -> None:
    sup = RareSuppressor(3, 100)
    entries = ["common", "rare", None]
    codes = np.array([0, 0, 1, 2, 0, 2, 0], dtype=np.int64)
    keep = sup.keep_dictionary("f", codes, entries)
    assert keep.tolist() == [False, False, False, True, True, True, True]
    assert sup.suppressed == {"f": 3}


def test_prime_fills_the_window_without_output() -> None:
    sup = RareSuppressor(3, 100)
    sup.prime("f", ["v", "v", "w"])
    assert sup.apply("f", ["v", "w"]).tolist() == ["v", RARE_TOKEN]
    assert sup.suppressed == {"f": 1}


def test_old_values_leave_the_window_and_memory_stays_bounded() -> None:
    sup = RareSuppressor(2, 5)
    assert sup.apply("f", ["a", "a"]).tolist() == [RARE_TOKEN, "a"]
    sup.apply("f", ["x", "y", "z", "w"])  # pushes both a's out of the window of 5
    assert sup.apply_one("f", "a") == RARE_TOKEN
    sup.apply("f", [str(i) for i in range(10_000)])
    assert len(sup._fields["f"].vocab) <= 4 * 5 + 5


def test_disabled_and_bad_arguments() -> None:
    off = RareSuppressor(0, 10)
    assert off.apply("f", ["a"]).tolist() == ["a"] and off.apply_one("f", "a") == "a"
    with pytest.raises(ValueError):
        RareSuppressor(11, 10)
    with pytest.raises(ValueError):
        RareSuppressor(2, 0)
