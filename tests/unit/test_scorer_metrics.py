"""The scorer's bulk histogram update equals one ``observe`` per value; the heap setting applies."""
from __future__ import annotations

import platform

import numpy as np
from prometheus_client import CollectorRegistry, Histogram

from scorer.heap import keep_freed_memory
from scorer.metrics import _REQUEST, observe_many


def _samples(h: Histogram) -> dict[str, float]:
    return {f"{s.name}{s.labels}": s.value for m in h.collect() for s in m.samples if "created" not in s.name}


def test_observe_many_matches_observe_one_by_one() -> None:
    rng = np.random.default_rng(0)
    # values on the bucket bounds (inclusive upper bounds), zeros, and beyond the last bound
    values = [0.0, *_REQUEST, 0.0015, 99.0, *rng.exponential(0.05, 500).tolist()]
    one, many = (Histogram("h", "h", buckets=_REQUEST, registry=CollectorRegistry()) for _ in range(2))
    for v in values:
        one.observe(v)
    observe_many(many, values)
    observe_many(many, [])
    a, b = _samples(one), _samples(many)
    assert a.keys() == b.keys()
    counts = [k for k in a if "_sum" not in k]
    assert [b[k] for k in counts] == [a[k] for k in counts]  # every bucket, and the count
    assert a["h_count{}"] == len(values) and a["h_bucket{'le': '+Inf'}"] == len(values)
    sums = [k for k in a if "_sum" in k]
    assert [round(b[k], 9) for k in sums] == [round(a[k], 9) for k in sums]  # summed in another order


def test_observe_many_without_bucket_fields_falls_back() -> None:
    class Plain:
        def __init__(self) -> None:
            self.seen: list[float] = []

        def observe(self, v: float) -> None:
            self.seen.append(v)

    h = Plain()
    observe_many(h, [0.5, 2.0])  # type: ignore[arg-type]
    assert h.seen == [0.5, 2.0]


def test_keep_freed_memory_applies_with_glibc() -> None:
    applied = keep_freed_memory(256 * 1024 * 1024)
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert applied is True
