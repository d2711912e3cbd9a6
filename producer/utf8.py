"""UTF-8 validity of string columns, checked by the hasher instead of the CSV reader.

pyarrow's CSV reader validates every string value as it converts it; on the benchmark's 1M rows x
20 columns that was a quarter of the parse (0.59 -> 0.44 CPU-s without it), and one bad byte
failed the whole block, so a Latin-1 value anywhere stopped the run. The reader now skips the
check (``check_utf8=False``) and :func:`invalid_rows` does it per column batch: a column whose
bytes are all ASCII (the common case) is valid at memory speed; otherwise each value is checked
and the rows holding an invalid one are rejected like any bad record (reason ``invalid_utf8``,
with their line numbers), so nothing that cannot be decoded reaches the rules or the hash.
"""
from __future__ import annotations

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from producer.valuetable import string_buffers

REASON = "invalid_utf8"


@numba.njit(cache=True, nogil=True)
def all_ascii(data: np.ndarray) -> bool:
    """True if no byte has its high bit set (eight bytes at a time)."""
    n8 = data.shape[0] // 8
    words = data[:n8 * 8].view(np.uint64)
    acc = np.uint64(0)
    for i in range(n8):
        acc |= words[i]
    for i in range(n8 * 8, data.shape[0]):
        acc |= np.uint64(data[i])
    return (acc & np.uint64(0x8080808080808080)) == 0


@numba.njit(cache=True, nogil=True, inline="always")
def _cont(data: np.ndarray, i: int, end: int, lo: int, hi: int) -> bool:
    return i < end and lo <= data[i] <= hi


@numba.njit(cache=True, nogil=True)
def _valid(data: np.ndarray, a: int, b: int) -> bool:
    """Well-formed UTF-8 (Unicode 15, table 3-7: no overlongs, surrogates or code points > U+10FFFF)."""
    i = a
    while i < b:
        c = data[i]
        if c < 0x80:
            i += 1
        elif 0xC2 <= c <= 0xDF:
            if not _cont(data, i + 1, b, 0x80, 0xBF):
                return False
            i += 2
        elif 0xE0 <= c <= 0xEF:
            lo = 0xA0 if c == 0xE0 else 0x80
            hi = 0x9F if c == 0xED else 0xBF
            if not (_cont(data, i + 1, b, lo, hi) and _cont(data, i + 2, b, 0x80, 0xBF)):
                return False
            i += 3
        elif 0xF0 <= c <= 0xF4:
            lo = 0x90 if c == 0xF0 else 0x80
            hi = 0x8F if c == 0xF4 else 0xBF
            if not (_cont(data, i + 1, b, lo, hi) and _cont(data, i + 2, b, 0x80, 0xBF)
                    and _cont(data, i + 3, b, 0x80, 0xBF)):
                return False
            i += 4
        else:
            return False
    return True


@numba.njit(cache=True, nogil=True)
def _invalid(data: np.ndarray, offsets: np.ndarray, out: np.ndarray) -> int:
    bad = 0
    for r in range(offsets.shape[0] - 1):
        if not _valid(data, offsets[r], offsets[r + 1]):
            out[r] = True
            bad += 1
    return bad


def invalid_rows(arr: pa.Array) -> np.ndarray | None:
    """Rows of a string column whose value is not UTF-8, or None when every value is."""
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        return None
    if len(arr) == 0:
        return None
    offsets, data = string_buffers(arr)
    lo, hi = int(offsets[0]), int(offsets[-1])
    if all_ascii(data[lo:hi]):
        return None
    out = np.zeros(len(arr), dtype=bool)
    return out if _invalid(data, offsets, out) else None


def blank_rows(arr: pa.Array, rows: np.ndarray) -> pa.Array:
    """``arr`` with the values of ``rows`` replaced by "" (they are rejected; nothing may decode them)."""
    return pc.if_else(pa.array(rows), pa.scalar("", arr.type), arr)
