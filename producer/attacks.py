"""Attacks a learner-side adversary can run on published indices, measured against the truth.

Each function takes what the attacker sees (indices, their counts) plus what it knows in public
(field names, dictionaries of candidate values, marginal frequencies) and scores its guesses
against the true ``(field, value) -> index`` map, which only the data owner has. They are the
measuring instruments of :mod:`producer.audit`; nothing here touches Kafka or the key file.

Attacker model (worst case, stated in the report): the attacker sees every frame and can tell
which indices belong to which field. The columnar producer writes a record's indices in schema
field order, so the position of an index in its record names its field whenever no value is
missing; co-occurrence clustering gives the same grouping otherwise.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

IndexOf = Callable[[str, str], int]  # the attacker's hash: (field, value string) -> index


@dataclass(frozen=True, slots=True)
class FieldRecovery:
    """How many of a field's (value, index) pairs an attack identified correctly."""

    field: str
    pairs: int  # distinct values of the field in the sample
    recovered: int  # pairs the attacker named correctly
    wrong: int  # indices the attacker named, wrongly (chance collisions, rank swaps)
    cells: int = 0  # record-field cells of the field in the sample
    cells_recovered: int = 0  # cells whose value the attacker names correctly

    @property
    def fraction(self) -> float:
        return self.recovered / self.pairs if self.pairs else 0.0

    @property
    def cell_fraction(self) -> float:
        return self.cells_recovered / self.cells if self.cells else 0.0


def total(results: Sequence[FieldRecovery]) -> tuple[int, int, int]:
    """(pairs, recovered, wrong) summed over fields."""
    return (sum(r.pairs for r in results), sum(r.recovered for r in results),
            sum(r.wrong for r in results))


def dictionary_attack(truth: Mapping[str, Mapping[str, int]], dictionary: Mapping[str, Sequence[str]],
                      index_of: IndexOf, counts: Mapping[str, Mapping[str, int]] | None = None,
                      ) -> list[FieldRecovery]:
    """Hash every candidate with the attacker's hash and name each observed index it hits.

    ``truth`` maps field -> value string -> true index; the attacker observes only the set of
    indices per field. An index claimed by exactly one candidate is named by it; an index claimed
    by several is ambiguous and counts for nobody. A pair is recovered when its own index is
    named by its own value; every other named index is a wrong (chance) match.
    """
    out = []
    for field, values in truth.items():
        observed = set(values.values())
        claims: dict[int, list[str]] = {}
        for cand in dictionary.get(field, ()):
            idx = index_of(field, cand)
            if idx in observed:
                claims.setdefault(idx, []).append(cand)
        named = {idx: c[0] for idx, c in claims.items() if len(c) == 1}
        good = {v for v, idx in values.items() if named.get(idx) == v}
        wrong = sum(1 for idx, v in named.items() if values.get(v) != idx)
        field_counts = (counts or {}).get(field, {})
        out.append(FieldRecovery(field, len(values), len(good), wrong,
                                 sum(field_counts.values()), sum(field_counts.get(v, 0) for v in good)))
    return out


def frequency_attack(truth: Mapping[str, Mapping[str, int]], counts: Mapping[str, Mapping[str, int]],
                     public: Mapping[str, Mapping[str, int]]) -> list[FieldRecovery]:
    """Match each field's indices to its public marginal by frequency rank.

    ``counts`` are the true value counts of the sample (the attacker sees the same numbers as
    index counts); ``public`` is the attacker's marginal per field. Indices are ranked by their
    observed count, candidate values by their public count, and paired rank by rank. Ties are
    broken by index number and by value string, which carry no information about the truth, so a
    block of tied values is matched no better than chance.
    """
    out = []
    for field, values in truth.items():
        index_counts: Counter[int] = Counter()
        for v, idx in values.items():
            index_counts[idx] += counts[field].get(v, 0)
        ranked_idx = sorted(index_counts, key=lambda i: (-index_counts[i], i))
        marginal = public.get(field, {})
        ranked_val = sorted(marginal, key=lambda v: (-marginal[v], v))
        guess = dict(zip(ranked_idx, ranked_val))
        good = {v for v, idx in values.items() if guess.get(idx) == v}
        wrong = sum(1 for idx, v in guess.items() if values.get(v) != idx)
        cells = sum(counts[field].values())
        out.append(FieldRecovery(field, len(values), len(good), wrong, cells,
                                 sum(counts[field].get(v, 0) for v in good)))
    return out


@dataclass(frozen=True, slots=True)
class Uniqueness:
    """How well a record's index set singles it out within the sample."""

    records: int
    unique: int  # records whose fingerprint no other record shares
    classes: int  # distinct fingerprints
    below_k: int  # records in classes smaller than k
    k: int
    min_class: int

    @property
    def fraction(self) -> float:
        return self.unique / self.records if self.records else 0.0

    @property
    def below_k_fraction(self) -> float:
        return self.below_k / self.records if self.records else 0.0


def uniqueness(fingerprints: np.ndarray, k: int = 5) -> Uniqueness:
    """Equivalence classes of the rows of an (n, fields) integer matrix of indices.

    A missing feature is a sentinel column value (e.g. -1), so records that differ only in which
    fields are absent stay apart, as their index sets do on the wire.
    """
    n = int(fingerprints.shape[0])
    if n == 0:
        return Uniqueness(0, 0, 0, 0, k, 0)
    if fingerprints.shape[1] == 0:
        return Uniqueness(n, 1 if n == 1 else 0, 1, n if n < k else 0, k, n)
    _, inverse, sizes = np.unique(_row_keys(fingerprints), return_inverse=True, return_counts=True)
    per_record = sizes[inverse.reshape(-1)]
    return Uniqueness(n, int((per_record == 1).sum()), int(sizes.shape[0]), int((per_record < k).sum()),
                      k, int(sizes.min()))


def _row_keys(mat: np.ndarray) -> np.ndarray:
    """One 64-bit key per row (a multiply-xorshift mix of its columns), so rows sort as numbers.

    Two different rows share a key with probability about n^2 / 2^64: negligible for any sample
    an audit reads, and such a merge could only understate uniqueness.
    """
    rng = np.random.default_rng(0x6862)  # fixed: the mix is part of the measurement, not a secret
    mult = rng.integers(1, 2**63, size=mat.shape[1], dtype=np.uint64) | np.uint64(1)
    h = np.zeros(mat.shape[0], dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(mat.shape[1]):
            h = (h ^ (mat[:, j].astype(np.uint64) * mult[j])) * np.uint64(0x9E3779B97F4A7C15)
            h ^= h >> np.uint64(29)
    return h
