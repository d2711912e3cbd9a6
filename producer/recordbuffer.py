"""Buffered records to one column batch, so a cut is hashed by the vectorised columnar path.

:class:`producer.agent.Agent` keeps the field values of accepted records in one flat list (the
schema's input columns in a fixed order, row after row). Every :data:`CHUNK` records the new
values of each column are joined into text while they are still in the CPU cache (joining them
only at the cut, after 16384 records, cost a cache miss per value: about a third more CPU for
send and columns together). At the cut each column becomes one Arrow string array built from
those texts, and ``Hasher.batch`` resolves each distinct value of a column once.

Arrow must not change what a value means: both hashing paths turn a value into its text with
``str()`` semantics (``producer.rules.as_text``), and only Arrow types that give the same Python
value back (or, for the large-dictionary kernel, the same text on a cast) are passed on. A column
of mixed or other types (bytes, ``int`` next to ``float``, a float in a categorical field, numpy
scalars, ...) makes :meth:`ColumnBuffer.batch` return None and the caller encodes that cut through
the record path, which defines the meaning of every value.
"""
from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

CHUNK = 512  # records joined at a time: their values are still cached (512 x 20 fields ~ 0.7 MB)
# Arrow types whose values come back as the Python value that was put in (and cast to the string
# ``str()`` gives, for the int and bool columns): the batch then sees what the record path sees
_EXACT_TYPES: dict[Any, type] = {pa.int64(): int, pa.bool_(): bool}
_NONE = type(None)
_MAX_OFFSET = 1 << 31  # Arrow string offsets are int32
_SEP = "\x00"  # one byte in UTF-8, never part of another character


def field_getter(columns: Sequence[str]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """A C-level getter of ``columns`` from a record as one tuple (KeyError if one is absent)."""
    if len(columns) == 1:
        name = columns[0]
        return lambda rec: (rec[name],)
    return operator.itemgetter(*columns)


class ColumnBuffer:
    """Field values of accepted records (``flat``, extended by the caller), with each column's
    values joined into text a chunk at a time (see the module docstring)."""

    def __init__(self, names: Sequence[str], float_ok: frozenset[str]) -> None:
        self.names = tuple(names)
        self.float_ok = float_ok  # columns that may hold floats (numeric fields read them back exactly)
        self.flat: list[Any] = []  # stays the same list object: callers may bind flat.extend
        self._sealed = 0  # records whose values are joined into _parts
        self._parts: list[list[tuple[str, str]] | None] = [[] for _ in self.names]  # None: not all str

    def __len__(self) -> int:
        return len(self.flat) // len(self.names)

    def seal(self) -> None:
        """Join the values of the records added since the last call, per column: once with NUL
        between them (for the offsets), once without (the data)."""
        k, start, n = len(self.names), self._sealed, len(self)
        if n <= start:
            return
        chunk = self.flat[start * k:n * k]
        for j, parts in enumerate(self._parts):
            if parts is not None:
                col = chunk[j::k]
                try:
                    parts.append((_SEP.join(col), "".join(col)))
                except TypeError:  # None, a number, bytes, ...: this column goes value by value
                    self._parts[j] = None
        self._sealed = n

    def batch(self) -> pa.RecordBatch | None:
        """Every buffered record as one column batch; None if a column's Python types could mean
        something else after Arrow."""
        self.seal()
        k, n = len(self.names), len(self)
        arrays = []
        for j, (name, parts) in enumerate(zip(self.names, self._parts)):
            arr = _joined_column(parts, n) if parts is not None else None
            if arr is None:
                arr = _typed_column(self.flat[j::k], name in self.float_ok)
                if arr is None:
                    return None
            arrays.append(arr)
        return pa.RecordBatch.from_arrays(arrays, names=list(self.names))

    def records(self) -> list[dict[str, Any]]:
        """The buffered records as dicts again (an absent field is None, as the record path reads it)."""
        k, names, flat = len(self.names), self.names, self.flat
        return [dict(zip(names, flat[i:i + k])) for i in range(0, len(flat), k)]

    def clear(self) -> None:
        self.flat.clear()
        self._sealed = 0
        self._parts = [[] for _ in self.names]


def _joined_column(parts: list[tuple[str, str]], m: int) -> pa.Array | None:
    """A string array from a column's joined chunks; None if a value holds NUL itself (a surplus
    separator), a lone surrogate, or the text is too long for int32 offsets."""
    try:
        raw = _SEP.join(p[0] for p in parts).encode("utf-8")
        data = "".join(p[1] for p in parts).encode("utf-8")
    except UnicodeError:
        return None
    if len(raw) >= _MAX_OFFSET:
        return None
    ends = np.flatnonzero(np.frombuffer(raw, dtype=np.uint8) == 0)
    if len(ends) != m - 1:
        return None
    offsets = np.empty(m + 1, dtype=np.int32)
    offsets[0] = 0
    offsets[1:m] = ends - np.arange(m - 1)
    offsets[m] = len(data)
    return pa.StringArray.from_buffers(m, pa.py_buffer(offsets), pa.py_buffer(data))


def _typed_column(col: list[Any], float_ok: bool) -> pa.Array | None:
    """A column that is not all ``str``, converted value by value; None unless Arrow gives every
    value back as it was (str or None; int; bool; float where ``float_ok``)."""
    try:
        arr = pa.array(col)
    except (pa.ArrowException, OverflowError, TypeError, ValueError, UnicodeError):
        return None  # mixed or unsupported types
    t = arr.type
    if t == pa.string():
        return arr  # str (and str subclasses, whose text is the same) and None
    if t == pa.null():
        return pa.nulls(len(col), pa.string())  # absent in every record of the cut
    if t in _EXACT_TYPES or (t == pa.float64() and float_ok):
        want = _EXACT_TYPES.get(t, float)
        if set(map(type, col)) <= {want, _NONE}:  # not ints next to floats, numpy scalars, ...
            return arr
    return None
