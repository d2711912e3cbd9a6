"""Labels of a column batch, found by each row's raw bytes among the few label strings seen so far.

Why: dictionary-encoding the label column in Arrow took ~2 ms per batch of 43,000 rows (0.04 CPU-s
per million rows, on the producer's main thread) to find the two or three strings a label column
holds. One numba pass over the Arrow string buffers compares each row with those strings; a string
not seen before stops the pass, is judged once by the :class:`~producer.rules.LabelRule` (so the
labels are exactly the dictionary path's), and the pass resumes.
"""
from __future__ import annotations

import numba
import numpy as np
import pyarrow as pa

from producer.rules import LabelRule
from producer.valuetable import column_view

MAX_KNOWN = 64  # distinct raw strings kept; a column with more takes the dictionary path


_UNKNOWN = -2  # in the one-byte table: no known string is this byte


@numba.njit(cache=True, nogil=True)
def _label_rows(col: tuple, known_offsets: np.ndarray, known_data: np.ndarray,
                known_labels: np.ndarray, one_byte: np.ndarray, out: np.ndarray, start: int) -> int:
    """``out[r]`` = the label of row ``r``'s string, from row ``start`` on; returns the first row
    whose string is not among the known ones, or the number of rows. ``col`` is a column as the
    value-table kernel reads it (``producer.valuetable._probe``); ``one_byte[b]`` answers a
    one-byte string (most labels) with one read."""
    data, ends, stride, column, skip, n = col
    n_known = known_labels.shape[0]
    for r in range(start, n):
        e0 = r * stride + column
        a = ends[e0] + skip
        size = ends[e0 + 1] - a
        if size == 1 and one_byte[data[a]] != _UNKNOWN:
            out[r] = one_byte[data[a]]
            continue
        found = -1
        for k in range(n_known):
            ka = known_offsets[k]
            if known_offsets[k + 1] - ka != size:
                continue
            same = True
            for i in range(size):
                if data[a + i] != known_data[ka + i]:
                    same = False
                    break
            if same:
                found = k
                break
        if found < 0:
            return r
        out[r] = known_labels[found]
    return n


class LabelCodes:
    """One hasher's known label strings (raw bytes) and their labels (1, 0, or -1 for bad)."""

    def __init__(self, rule: LabelRule) -> None:
        self.rule = rule
        self.known: list[bytes] = []
        self._arrays = self._pack()

    def _pack(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        offsets = np.zeros(len(self.known) + 1, dtype=np.int64)
        np.cumsum([len(k) for k in self.known], out=offsets[1:])
        data = np.frombuffer(b"".join(self.known) or b"\0", dtype=np.uint8)
        labels = np.array([self.rule.label(k.decode("utf-8")) for k in self.known], dtype=np.int8)
        one_byte = np.full(256, _UNKNOWN, dtype=np.int8)
        for k, label in zip(self.known, labels):
            if len(k) == 1:
                one_byte[k[0]] = label
        return offsets, data, labels, one_byte

    def labels(self, arr: pa.Array | tuple) -> np.ndarray | None:
        """int8 labels of a string column without nulls (Arrow, or a raw column as
        :meth:`producer.csvplain.RawBatch.raw` gives); ``None`` when this path does not apply
        (another type, nulls, or more than ``MAX_KNOWN`` distinct strings): use the dictionary."""
        if not isinstance(arr, tuple) and (
                arr.null_count or not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type))):
            return None
        col = arr if isinstance(arr, tuple) else column_view(arr)
        data, ends, stride, column, skip, n = col
        out = np.empty(n, dtype=np.int8)
        row = 0
        while True:
            row = _label_rows(col, *self._arrays, out, row)
            if row == n:
                return out
            if len(self.known) >= MAX_KNOWN:
                return None
            e0 = row * stride + column
            raw = data[ends[e0] + skip:ends[e0 + 1]].tobytes()
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return None  # (invalid UTF-8 is blanked before labels are read)
            self.known.append(raw)
            self._arrays = self._pack()
