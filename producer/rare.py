"""Rare-value suppression: a value seen fewer than ``k`` times recently becomes the field's rare bucket.

A value that occurs once or twice singles out its record (and its frequency is the easiest to
match against a public marginal), so before hashing each field's value string is replaced by
:data:`RARE_TOKEN` unless the value occurred at least ``k`` times among the last ``window``
records of the stream, this one included. The decision depends only on the order of the
values, so it is deterministic, and the columnar path (:meth:`RareSuppressor.apply`,
:meth:`RareSuppressor.keep_dictionary`) and the record path (:meth:`RareSuppressor.apply_one`)
give the same answer for the same stream however it is cut into batches.

A common value's first ``k - 1`` occurrences in a stream are suppressed too: the price of
deciding without looking ahead. ``None`` (no feature) is counted as a record in the window but
never replaced. :meth:`RareSuppressor.prime` fills the window from earlier data first, which
removes that start-up effect. Off unless the owner asks for it (``k = 0`` or ``1`` keeps every value).
"""
from __future__ import annotations

from typing import Any, Hashable, Sequence

import numpy as np

RARE_TOKEN = "__rare__"
_PRUNE_FACTOR = 4  # the vocabulary is rebuilt from the window when it outgrows 4 windows


class _FieldWindow:
    """The last ``window`` values of one field as integer codes in a ring, with their counts."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.vocab: dict[Hashable, int] = {}
        self.ring = np.zeros(window, dtype=np.int64)
        self.head = 0  # next write position
        self.size = 0
        self.counts = np.zeros(64, dtype=np.int64)

    def code(self, value: Hashable) -> int:
        c = self.vocab.get(value)
        if c is None:
            c = self.vocab[value] = len(self.vocab)
            if c >= self.counts.shape[0]:
                self.counts = np.concatenate([self.counts, np.zeros_like(self.counts)])
        return c

    def history(self) -> np.ndarray:
        """Codes in the window, oldest first."""
        if self.size < self.window:
            return self.ring[:self.size]
        return np.concatenate([self.ring[self.head:], self.ring[:self.head]])

    def push_one(self, code: int) -> int:
        """Add one value; its count in the window including itself."""
        if self.size == self.window:
            self.counts[self.ring[self.head]] -= 1
        else:
            self.size += 1
        self.ring[self.head] = code
        self.head = (self.head + 1) % self.window
        self.counts[code] += 1
        count = int(self.counts[code])
        if len(self.vocab) > _PRUNE_FACTOR * self.window:
            self._prune()
        return count

    def push_many(self, codes: np.ndarray) -> np.ndarray:
        """Add a batch; for each value, its count among the ``window`` records ending at it.

        The window of position ``i`` in ``history + batch`` is ``(i - window, i]``. Sorting the
        positions by (code, position) turns both ends of it into one ``searchsorted`` each.
        """
        hist = self.history()
        combined = np.concatenate([hist, codes.astype(np.int64)])
        h, length = hist.shape[0], combined.shape[0]
        pos = np.arange(length, dtype=np.int64)
        base = combined * (length + 1)
        keys = np.sort(base + pos)
        mine = pos[h:]
        upper = np.searchsorted(keys, base[h:] + mine, side="right")
        lower = np.searchsorted(keys, base[h:] + np.maximum(mine - self.window, -1), side="right")
        tail = combined[-self.window:]
        self.ring[:tail.shape[0]] = tail
        self.size = tail.shape[0]
        self.head = self.size % self.window
        self.counts[:] = 0
        np.add.at(self.counts, tail, 1)
        if len(self.vocab) > _PRUNE_FACTOR * self.window:
            self._prune()
        return upper - lower

    def _prune(self) -> None:
        """Forget the codes of values no longer in the window, so memory stays bounded."""
        hist = self.history()
        live = np.unique(hist)
        remap = {int(c): i for i, c in enumerate(live.tolist())}
        self.vocab = {v: remap[c] for v, c in self.vocab.items() if c in remap}
        table = np.full(self.counts.shape[0], -1, dtype=np.int64)
        table[live] = np.arange(live.shape[0])
        new = table[hist]
        self.ring[:new.shape[0]] = new
        self.head = self.size % self.window
        self.counts = np.zeros(max(64, 2 * live.shape[0]), dtype=np.int64)
        np.add.at(self.counts, new, 1)


class RareSuppressor:
    """Per-field sliding-window counts deciding which values are published as themselves."""

    def __init__(self, k: int, window: int = 100_000) -> None:
        if k < 0:
            raise ValueError("k must be >= 0")
        if window < 1:
            raise ValueError("window must be >= 1")
        if k > window:
            raise ValueError("k larger than the window would suppress every value")
        self.k, self.window = k, window
        self._fields: dict[str, _FieldWindow] = {}
        self.suppressed: dict[str, int] = {}  # values replaced so far, per field (for metrics)

    @property
    def enabled(self) -> bool:
        return self.k > 1

    def _state(self, field: str) -> _FieldWindow:
        st = self._fields.get(field)
        if st is None:
            st = self._fields[field] = _FieldWindow(self.window)
        return st

    def apply_one(self, field: str, value: str | None) -> str | None:
        """The value string to hash for one record's value of ``field`` (record path)."""
        if not self.enabled:
            return value
        st = self._state(field)
        count = st.push_one(st.code(value))
        if value is None or count >= self.k:
            return value
        self.suppressed[field] = self.suppressed.get(field, 0) + 1
        return RARE_TOKEN

    def prime(self, field: str, values: Sequence[str | None] | np.ndarray) -> None:
        """Fill the window with earlier records (e.g. the first rows of the input, read twice, as
        quantile edges are fitted) so a common value's first occurrences are not suppressed."""
        if self.enabled and len(values):
            entries: dict[Any, int] = {}
            codes = np.fromiter((entries.setdefault(v, len(entries)) for v in values), dtype=np.int64,
                                count=len(values))
            st = self._state(field)
            table = np.fromiter((st.code(e) for e in entries), dtype=np.int64, count=len(entries))
            st.push_many(table[codes])

    def keep_dictionary(self, field: str, codes: np.ndarray, entries: Sequence[Any]) -> np.ndarray:
        """Which rows of a dictionary-encoded column keep their value (columnar path).

        ``codes`` index ``entries`` (e.g. a pyarrow dictionary array's indices and dictionary);
        only the distinct entries are looked up in Python, the rows are handled by numpy.
        """
        n = int(codes.shape[0])
        if not self.enabled or n == 0:
            return np.ones(n, dtype=bool)
        st = self._state(field)
        table = np.fromiter((st.code(e) for e in entries), dtype=np.int64, count=len(entries))
        counts = st.push_many(table[codes])
        keep = counts >= self.k
        is_none = np.fromiter((e is None for e in entries), dtype=bool, count=len(entries))
        if is_none.any():
            keep |= is_none[codes]
        dropped = int(n - keep.sum())
        if dropped:
            self.suppressed[field] = self.suppressed.get(field, 0) + dropped
        return keep

    def apply(self, field: str, values: Sequence[str | None] | np.ndarray) -> np.ndarray:
        """The value strings to hash for a batch of one field's values, in stream order."""
        out = np.asarray(values, dtype=object)
        if not self.enabled or out.shape[0] == 0:
            return out.copy()
        entries: dict[Any, int] = {}
        codes = np.fromiter((entries.setdefault(v, len(entries)) for v in out.tolist()),
                            dtype=np.int64, count=out.shape[0])
        keep = self.keep_dictionary(field, codes, list(entries))
        result = out.copy()
        result[~keep] = RARE_TOKEN
        return result
