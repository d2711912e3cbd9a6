"""Per-field tables of raw value bytes -> feature index, probed by one nogil numba call per column.

Why: dictionary-encoding every column batch in Arrow and hashing each batch's distinct values
again (a million-value field has ~100k of them per batch) cost ~1.3 CPU-s per million 20-field
rows. An open-addressing table that lives across batches, probed straight from the Arrow string
buffers, costs one cheap (non-keyed) hash and one slot read per value (a value of up to 8 bytes
is kept in the slot itself, longer ones compare against a byte arena); only never-seen values
get the keyed BLAKE2b, inside the same call. The kernel releases the GIL, so the CSV reader can
parse the next batch on the other core meanwhile. The table keys are the trimmed input bytes, which
is exactly what the value-string rule of a categorical column hashes (or maps to missing).
"""
from __future__ import annotations

import numba
import numpy as np
import pyarrow as pa

from producer.blake2 import KeyedBlake2, digest_one

ABSENT = -1  # entry code of a value that gives no feature (missing, no missing token)
_M1, _M2 = np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB93FE53B6389)
_S33, _B8, _ONE = np.uint64(33), np.uint64(8), np.uint64(1)
# slot columns: first 8 bytes (little-endian, zero padded), 1 + length | flags << 32 (EMPTY: free),
# code (index or ABSENT), arena offset of the bytes (values longer than 8 bytes)
_WORD, _LEN, _CODE, _AT = 0, 1, 2, 3
EMPTY = 0  # so a table from np.zeros is empty (calloc: no pass over it)
_PRELOADED, _SEEN = np.int64(1 << 32), np.int64(2 << 32)  # a missing value put in at creation; seen since
_LOW = np.int64(0xFFFFFFFF)
# meta: slots used, arena bytes used, values hashed (keyed), rows without a feature (this call)
_N, _USED, _HASHED, _ABSENT_ROWS = 0, 1, 2, 3


@numba.njit(cache=True, nogil=True, inline="always")
def _mix(h: np.uint64) -> np.uint64:
    h = (h ^ (h >> _S33)) * _M1
    h = (h ^ (h >> _S33)) * _M2
    return h ^ (h >> _S33)


@numba.njit(cache=True, nogil=True, inline="always")
def _key(data: np.ndarray, a: int, b: int) -> tuple[np.int64, np.uint64]:
    """(first 8 bytes as a word, cheap hash of all bytes) of ``data[a:b]``; one mix for a short value."""
    first = np.uint64(0)
    for p in range(a, min(b, a + 8)):
        first |= np.uint64(data[p]) << (np.uint64(p - a) * _B8)
    h = _mix(first ^ (np.uint64(b - a) * _M2))
    p = a + 8
    while p < b:
        w = np.uint64(0)
        for q in range(p, min(b, p + 8)):
            w |= np.uint64(data[q]) << (np.uint64(q - p) * _B8)
        h = _mix(h ^ w)
        p += 8
    return np.int64(first), h


@numba.njit(cache=True, nogil=True, inline="always")
def _space(c: np.uint8) -> bool:
    return c == 32 or 9 <= c <= 13  # producer.rules.WHITESPACE, byte for byte


@numba.njit(cache=True, nogil=True)
def _find(table: tuple, data: np.ndarray, a: int, b: int, word: np.int64, h: np.uint64) -> int:
    """Slot of ``data[a:b]``, or minus one minus the free slot where it would go."""
    slots, arena, _ = table
    smask = np.uint64(slots.shape[0] - 1)
    size = b - a
    s = h & smask
    while True:
        m = slots[s, _LEN]
        if m == EMPTY:
            return -1 - np.int64(s)
        if slots[s, _WORD] == word and (m & _LOW) == size + 1:
            if size <= 8:
                return np.int64(s)
            at = slots[s, _AT]
            same = True
            for q in range(8, size):
                if arena[at + q] != data[a + q]:
                    same = False
                    break
            if same:
                return np.int64(s)
        s = (s + _ONE) & smask


@numba.njit(cache=True, nogil=True)
def _put(table: tuple, s: int, data: np.ndarray, a: int, b: int, word: np.int64, flags: np.int64, code: int) -> None:
    """Fill free slot ``s`` (the caller checked there is room)."""
    slots, arena, meta = table
    size = b - a
    slots[s, _WORD], slots[s, _LEN], slots[s, _CODE], slots[s, _AT] = word, (size + 1) | flags, code, 0
    if size > 8:
        used = meta[_USED]
        arena[used:used + size] = data[a:b]
        slots[s, _AT] = used
        meta[_USED] = used + size
    meta[_N] += 1


@numba.njit(cache=True, nogil=True)
def _probe(col: tuple, out: tuple, table: tuple, keyed: tuple, start: int) -> int:
    """Write the index of rows ``start..`` of an Arrow string column into ``out`` (a column of the
    row-major index array and its present flags, cleared for a value without a feature).

    Returns the number of rows (done), or the row at which the table ran out of room: the caller
    grows or empties the table and calls again from there.
    """
    data, offsets = col
    idx, present, mask = out
    slots, arena, meta = table
    state, prefix = keyed
    hbuf = np.empty(8, dtype=np.uint64)
    block = np.zeros(128, dtype=np.uint8)
    n = offsets.shape[0] - 1
    for i in range(start, n):
        a, b = offsets[i], offsets[i + 1]
        while a < b and _space(data[a]):
            a += 1
        while b > a and _space(data[b - 1]):
            b -= 1
        word, h = _key(data, a, b)
        s = _find(table, data, a, b, word, h)
        if s >= 0:
            code = slots[s, _CODE]
            m = slots[s, _LEN]
            if m & _PRELOADED:
                slots[s, _LEN] = m | _SEEN
        else:
            if 4 * (meta[_N] + 1) > 3 * slots.shape[0] or meta[_USED] + (b - a) > arena.shape[0]:
                return i
            code = np.int64(digest_one(state, prefix, data, a, b, hbuf, block) & mask)
            meta[_HASHED] += 1
            _put(table, -1 - s, data, a, b, word, np.int64(0), code)
        if code < 0:
            idx[i] = 0
            present[i] = False
            meta[_ABSENT_ROWS] += 1
        else:
            idx[i] = code
    return n


@numba.njit(cache=True, nogil=True)
def _rehash(old: np.ndarray, old_arena: np.ndarray, table: tuple) -> None:
    """Move every used slot of ``old`` into the (empty, larger) ``table``."""
    short = np.zeros(8, dtype=np.uint8)
    for s in range(old.shape[0]):
        m = old[s, _LEN]
        if m == EMPTY:
            continue
        size = (m & _LOW) - 1
        if size > 8:
            data, a = old_arena, old[s, _AT]
        else:
            for k in range(8):
                short[k] = (np.uint64(old[s, _WORD]) >> np.uint64(8 * k)) & np.uint64(0xFF)
            data, a = short, 0
        word, h = _key(data, a, a + size)
        free = _find(table, data, a, a + size, word, h)
        _put(table, -1 - free, data, a, a + size, word, m & ~_LOW, old[s, _CODE])


class ValueTable:
    """One field's table; emptied when it would hold more than ``limit`` values (as the caches)."""

    def __init__(self, kernel: KeyedBlake2, field: str, bits: int, limit: int, missing: dict[bytes, int]) -> None:
        self._keyed = (kernel.state, np.frombuffer(field.encode("utf-8") + b"\x1f", dtype=np.uint8))
        self._mask = np.uint64((1 << bits) - 1)
        self.limit, self._missing = limit, missing
        self.meta = np.zeros(4, dtype=np.int64)
        self._alloc(1 << 12, 1 << 15)
        self._preload()

    @property
    def size(self) -> int:
        """Slots in use (values put in since the table was last emptied, the missing ones included)."""
        return int(self.meta[_N])

    def __len__(self) -> int:
        """Distinct values seen since the table was last emptied (a preloaded missing value counts
        once it was seen)."""
        flags = self.slots[:, _LEN][self.slots[:, _LEN] != EMPTY] & ~_LOW
        return int(self.meta[_N]) - len(self._missing) + int(np.count_nonzero(flags & _SEEN))

    @property
    def hashed(self) -> int:
        return int(self.meta[_HASHED])

    def _alloc(self, n_slots: int, arena_bytes: int) -> None:
        self.slots = np.zeros((n_slots, 4), dtype=np.int64)
        self.arena = np.zeros(arena_bytes, dtype=np.uint8)
        self.meta[_N] = self.meta[_USED] = 0

    def _preload(self) -> None:
        """The missing values (trimmed bytes -> their code), so the kernel needs no rule."""
        for raw, code in self._missing.items():
            buf = np.frombuffer(raw + b"\0", dtype=np.uint8)
            word, h = _key(buf, 0, len(raw))
            free = _find(self._table(), buf, 0, len(raw), word, np.uint64(h))
            if free < 0:
                _put(self._table(), -1 - free, buf, 0, len(raw), word, _PRELOADED, code)

    def _table(self) -> tuple:
        return self.slots, self.arena, self.meta

    def _make_room(self, value_bytes: int) -> None:
        n = int(self.meta[_N])
        arena_bytes = max(2 * self.arena.shape[0], self.arena.shape[0] + 2 * value_bytes)
        if n + 1 > self.limit + len(self._missing):
            self._alloc(self.slots.shape[0], self.arena.shape[0])
            self._preload()
            return
        old, old_arena = self.slots, self.arena
        self._alloc(old.shape[0] * (2 if 4 * (n + 1) > 3 * old.shape[0] else 1), arena_bytes)
        _rehash(old, old_arena, self._table())

    def lookup(self, arr: pa.Array, idx: np.ndarray, present: np.ndarray) -> int:
        """Indices of a string column without nulls into ``idx``; returns rows without a feature
        (their ``present`` is cleared)."""
        bufs = arr.buffers()
        width = np.int64 if pa.types.is_large_string(arr.type) else np.int32
        offsets = np.frombuffer(bufs[1], dtype=width, count=len(arr) + 1, offset=arr.offset * width().itemsize)
        data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(1, np.uint8)
        self.meta[_ABSENT_ROWS] = 0
        row, n = 0, len(arr)
        while row < n:
            row = _probe((data, offsets), (idx, present, self._mask), self._table(), self._keyed, row)
            if row < n:
                self._make_room(int(offsets[row + 1] - offsets[row]))
        return int(self.meta[_ABSENT_ROWS])
