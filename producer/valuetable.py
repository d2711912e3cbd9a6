"""Per-field tables of raw value bytes -> feature index, probed by one nogil numba call per column.

Why: dictionary-encoding every column batch in Arrow and hashing each batch's distinct values
again (a million-value field has ~100k of them per batch) cost ~1.3 CPU-s per million 20-field
rows. An open-addressing table that lives across batches, probed straight from the Arrow string
buffers, costs one cheap (non-keyed) hash and one slot read per value; only never-seen values get
the keyed BLAKE2b, inside the same call. The kernel releases the GIL, so the CSV reader can parse
the next batch on the other core meanwhile. The table keys are the trimmed input bytes, which is
exactly what the value-string rule of a categorical column hashes (or maps to missing).

Why 16-byte slots, probed a chunk at a time: the big fields' tables outgrow L2, and at 32 bytes a
slot the twenty tables together (~36 MB) outgrew L3, so a probe in the largest field was mostly a
miss (~45 ns a value with warm tables, ~125 ns while they fill). The rows of a chunk are trimmed
and hashed first, each row's first slot prefetched, then probed, so the misses overlap (~17 and
~61 ns). A value of up to 8 bytes is kept in its slot, a longer one in a byte arena (the slot holds
its offset and a hash tag, so a probe seldom reads the arena in vain). Hash stage of the
benchmark's 1M rows: 0.96 -> 0.58 CPU-s with fresh tables, 0.61 -> 0.32 with warm ones.
"""
from __future__ import annotations

import numba
import numpy as np
import pyarrow as pa

from producer.blake2 import KeyedBlake2, digest_one
from shared.prefetch import prefetch_read
from shared.unaligned import load64

ABSENT = -1  # entry code of a value that gives no feature (missing, no missing token)
_M1, _M2 = np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB93FE53B6389)
_S33, _FOUR, _ONES = np.uint64(33), np.uint64(4), np.uint64(0xFFFFFFFFFFFFFFFF)
# slot columns (u64): the key (a value of up to 8 bytes itself, little-endian and zero padded; a
# longer one's arena offset | _TAG bits of its hash) and the entry (code + 1 | (1 + length) << 32 | flags)
_KEY, _ENTRY = 0, 1
EMPTY = 0  # entry of a free slot, so a table from np.zeros is empty (calloc: no pass over it)
_TAG, _AT = np.uint64(0xFFFFFF << 40), np.uint64((1 << 40) - 1)
_CODE, _LENGTH, _SHIFT = np.uint64(0xFFFFFFFF), np.uint64(((1 << 28) - 1) << 32), np.uint64(32)
_PRELOADED, _SEEN = np.uint64(1 << 60), np.uint64(1 << 61)  # a missing value put in at creation; seen since
MAX_KEPT = (1 << 28) - 2  # a longer value is hashed every time, never kept (its length has no room)
# meta: slots used, arena bytes used, values hashed (keyed), rows without a feature (this call)
_N, _USED, _HASHED, _ABSENT_ROWS = 0, 1, 2, 3
_CHUNK = 32  # rows hashed and prefetched ahead of their probes


@numba.njit(cache=True, nogil=True, inline="always")
def _mix(h: np.uint64) -> np.uint64:
    h = (h ^ (h >> _S33)) * _M1
    h = (h ^ (h >> _S33)) * _M2
    return h ^ (h >> _S33)


@numba.njit(cache=True, nogil=True, inline="always")
def _word(data: np.ndarray, p: int, n: int) -> np.uint64:
    """Bytes ``data[p:p + min(n, 8)]`` as a zero-padded u64, from one unaligned load without a
    branch (the 8 bytes that end the buffer, shifted, near its end; ``data`` has at least 8).

    Branch-free on purpose: numba increfs an inlined helper's array arguments and prunes that
    only in straight-line code; with a byte loop here every probe made four NRT calls (~5 ns)."""
    q = min(p, data.shape[0] - 8)
    back = _FOUR * np.uint64(p - q)  # shifts of up to 32 twice: a shift by 64 is undefined
    keep = _FOUR * np.uint64(min(n, 8))
    return ((load64(data, q) >> back) >> back) & ~((_ONES << keep) << keep)


@numba.njit(cache=True, nogil=True)
def _rest(data: np.ndarray, p: int, b: int, h: np.uint64) -> np.uint64:
    """The cheap hash ``h`` continued over the bytes ``data[p:b]`` of a value longer than 8 bytes."""
    while p < b:
        h = _mix(h ^ _word(data, p, b - p))
        p += 8
    return h


@numba.njit(cache=True, nogil=True, inline="always")
def _key(data: np.ndarray, a: int, b: int) -> tuple[np.uint64, np.uint64]:
    """(slot key to match, cheap hash of all bytes) of ``data[a:b]``; the key of a value longer
    than 8 bytes is its hash tag (the arena offset is the slot's own)."""
    first = _word(data, a, b - a)
    h = _mix(first ^ (np.uint64(b - a) * _M2))
    if b - a <= 8:
        return first, h
    h = _rest(data, a + 8, b, h)
    return h & _TAG, h


@numba.njit(cache=True, nogil=True, inline="always")
def _space(c: np.uint8) -> bool:
    return c == 32 or 9 <= c <= 13  # producer.rules.WHITESPACE, byte for byte


@numba.njit(cache=True, nogil=True)
def _find(table: tuple, data: np.ndarray, a: int, b: int, key: np.uint64, h: np.uint64) -> int:
    """Slot of ``data[a:b]``, or minus one minus the free slot where it would go."""
    slots, arena, _ = table
    smask = np.uint64(slots.shape[0] - 1)
    size = b - a
    length = np.uint64(size + 1) << _SHIFT
    kmask = _ONES if size <= 8 else _TAG
    s = h & smask
    while True:
        e = slots[s, _ENTRY]
        if e == EMPTY:
            return -1 - np.int64(s)
        if (e & _LENGTH) == length and (slots[s, _KEY] & kmask) == key:
            if size <= 8:
                return np.int64(s)
            at = np.int64(slots[s, _KEY] & _AT)
            same = True
            for q in range(size):
                if arena[at + q] != data[a + q]:
                    same = False
                    break
            if same:
                return np.int64(s)
        s = (s + np.uint64(1)) & smask


@numba.njit(cache=True, nogil=True)
def _put(table: tuple, s: int, data: np.ndarray, a: int, b: int, key: np.uint64, entry: np.uint64) -> None:
    """Fill free slot ``s`` (the caller checked there is room)."""
    slots, arena, meta = table
    size = b - a
    if size > 8:
        used = meta[_USED]
        arena[used:used + size] = data[a:b]
        key |= np.uint64(used)
        meta[_USED] = used + size
    slots[s, _KEY] = key
    slots[s, _ENTRY] = entry | (np.uint64(size + 1) << _SHIFT)
    meta[_N] += 1


@numba.njit(cache=True, nogil=True)
def _probe(col: tuple, out: tuple, table: tuple, keyed: tuple, start: int) -> int:
    """Write the index of rows ``start..`` of a string column into ``out`` (a column of the
    row-major index array and its present flags, cleared for a value without a feature).

    ``col`` is (bytes, ends, stride, column, skip, rows): row ``r``'s value is
    ``bytes[ends[r * stride + column] + skip:ends[r * stride + column + 1]]``. An Arrow string
    array is (data, offsets, 1, 0, 0, n); a raw CSV block (:class:`producer.csvplain.RawBatch`)
    is (block, field ends, fields, column, 1, lines), read where the reader left it.

    Returns the number of rows (done), or the row at which the table ran out of room: the caller
    grows or empties the table and calls again from there.
    """
    data, ends, stride, column, skip, n = col
    idx, present, mask = out
    slots, arena, meta = table
    state, prefix = keyed
    block = np.empty(16, dtype=np.uint64)
    ahead = np.empty((_CHUNK, 4), dtype=np.uint64)  # trimmed start, stop, key, hash
    smask = np.uint64(slots.shape[0] - 1)
    for c in range(start, n, _CHUNK):
        stop = min(c + _CHUNK, n)
        for i in range(c, stop):  # hash the chunk and prefetch each row's first slot
            e0 = i * stride + column
            a, b = ends[e0] + skip, ends[e0 + 1]
            while a < b and _space(data[a]):
                a += 1
            while b > a and _space(data[b - 1]):
                b -= 1
            key, h = _key(data, a, b)
            prefetch_read(slots, h & smask)
            ahead[i - c, 0], ahead[i - c, 1], ahead[i - c, 2], ahead[i - c, 3] = a, b, key, h
        for i in range(c, stop):
            a, b, key, h = np.int64(ahead[i - c, 0]), np.int64(ahead[i - c, 1]), ahead[i - c, 2], ahead[i - c, 3]
            s = _find(table, data, a, b, key, h)
            if s >= 0:
                e = slots[s, _ENTRY]
                if e & _PRELOADED:
                    slots[s, _ENTRY] = e | _SEEN
                code = np.int64(e & _CODE) - 1
            else:
                keep = b - a <= MAX_KEPT
                if keep and (4 * (meta[_N] + 1) > 3 * slots.shape[0] or meta[_USED] + (b - a) > arena.shape[0]):
                    return i
                code = np.int64(digest_one(state, prefix, data, a, b, block) & mask)
                meta[_HASHED] += 1
                if keep:
                    _put(table, -1 - s, data, a, b, key, np.uint64(code + 1))
            if code < 0:
                idx[i] = 0
                present[i] = False
                meta[_ABSENT_ROWS] += 1
            else:
                idx[i] = code
    return n


@numba.njit(cache=True, nogil=True)
def _rehash(old: np.ndarray, table: tuple) -> None:
    """Move every used slot of ``old`` into the (empty, larger) slots of ``table``, whose arena
    holds the old one's bytes at the same offsets."""
    slots, arena, meta = table
    smask = np.uint64(slots.shape[0] - 1)
    for r in range(old.shape[0]):
        e = old[r, _ENTRY]
        if e == EMPTY:
            continue
        size = np.int64((e & _LENGTH) >> _SHIFT) - 1
        if size <= 8:
            h = _mix(old[r, _KEY] ^ (np.uint64(size) * _M2))
        else:
            at = np.int64(old[r, _KEY] & _AT)
            h = _key(arena, at, at + size)[1]
        s = h & smask
        while slots[s, _ENTRY] != EMPTY:
            s = (s + np.uint64(1)) & smask
        slots[s, _KEY], slots[s, _ENTRY] = old[r, _KEY], e
        meta[_N] += 1


def string_buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Zero-copy views of a (large) string array: its ``len + 1`` offsets and its value bytes
    (empty when no value has a byte)."""
    bufs = arr.buffers()
    width = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    offsets = np.frombuffer(bufs[1], dtype=width, count=len(arr) + 1, offset=arr.offset * width().itemsize)
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    return offsets, data


def column_view(arr: pa.Array) -> tuple[np.ndarray, np.ndarray, int, int, int, int]:
    """A string array as the kernels read a column (:func:`_probe`): (data, offsets, 1, 0, 0, n),
    the data padded to 8 bytes when shorter (the kernels read 8 bytes at a time)."""
    offsets, data = string_buffers(arr)
    if data.shape[0] < 8:
        data = np.concatenate([data, np.zeros(8, np.uint8)])
    return data, offsets, 1, 0, 0, len(arr)


class ValueTable:
    """One field's table; emptied when it would hold more than ``limit`` values (as the caches)."""

    def __init__(self, kernel: KeyedBlake2, field: str, bits: int, limit: int, missing: dict[bytes, int]) -> None:
        self._keyed = (kernel.state, np.frombuffer(field.encode("utf-8") + b"\x1f", dtype=np.uint8))
        self._mask = np.uint64((1 << bits) - 1)
        self.limit, self._missing = limit, missing
        self.meta = np.zeros(4, dtype=np.int64)
        self.slots = np.zeros((1 << 12, 2), dtype=np.uint64)
        self.arena = np.zeros(1 << 15, dtype=np.uint8)
        self._preload()

    @property
    def size(self) -> int:
        """Slots in use (values put in since the table was last emptied, the missing ones included)."""
        return int(self.meta[_N])

    def __len__(self) -> int:
        """Distinct values seen since the table was last emptied (a preloaded missing value counts
        once it was seen)."""
        seen = np.count_nonzero(self.slots[:, _ENTRY] & _SEEN)
        return int(self.meta[_N]) - len(self._missing) + int(seen)

    @property
    def hashed(self) -> int:
        return int(self.meta[_HASHED])

    def _preload(self) -> None:
        """The missing values (trimmed bytes -> their code), so the kernel needs no rule."""
        for raw, code in self._missing.items():
            buf = np.frombuffer(raw + bytes(8), dtype=np.uint8)
            key, h = _key(buf, 0, len(raw))
            key, h = np.uint64(key), np.uint64(h)  # as the kernel types them (not Python ints)
            free = _find(self._table(), buf, 0, len(raw), key, h)
            if free < 0:
                _put(self._table(), -1 - free, buf, 0, len(raw), key, np.uint64(code + 1) | _PRELOADED)

    def _table(self) -> tuple:
        return self.slots, self.arena, self.meta

    def _make_room(self, value_bytes: int) -> None:
        """Empty the table at its limit, else double the slots (at 3/4 full) or the arena: the arena
        is copied, so the bytes keep their offsets and a rehash moves only the slots."""
        n, used = int(self.meta[_N]), int(self.meta[_USED])
        if n + 1 > self.limit + len(self._missing):
            self.slots[:] = 0
            self.meta[_N] = self.meta[_USED] = 0
            self._preload()
            return
        if used + value_bytes > self.arena.shape[0]:
            arena = np.zeros(max(2 * self.arena.shape[0], used + 2 * value_bytes), dtype=np.uint8)
            arena[:used] = self.arena[:used]
            self.arena = arena
        if 4 * (n + 1) > 3 * self.slots.shape[0]:
            old, self.slots = self.slots, np.zeros((2 * self.slots.shape[0], 2), dtype=np.uint64)
            self.meta[_N] = 0
            _rehash(old, self._table())

    def lookup(self, arr: pa.Array | tuple, idx: np.ndarray, present: np.ndarray) -> int:
        """Indices of a string column without nulls (an Arrow array, or a raw column as
        :meth:`producer.csvplain.RawBatch.raw` gives) into ``idx``; returns rows without a feature
        (their ``present`` is cleared)."""
        col = arr if isinstance(arr, tuple) else column_view(arr)
        data, ends, stride, column, skip, n = col
        self.meta[_ABSENT_ROWS] = 0
        row = 0
        while row < n:
            row = _probe(col, (idx, present, self._mask), self._table(), self._keyed, row)
            if row < n:
                e0 = row * stride + column
                self._make_room(int(ends[e0 + 1] - ends[e0] - skip))
        return int(self.meta[_ABSENT_ROWS])
