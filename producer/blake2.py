"""Keyed BLAKE2b-64 of many short messages in one numba call (the columnar path's hash kernel).

Computes exactly ``hashlib.blake2b(prefix + value, key=key, digest_size=8, person=PERSON)`` for
every value of an Arrow string buffer (offsets + bytes), so a column batch's distinct values are
hashed without creating a Python object per value. The keyed prefix state (parameter block and the
key block) is computed once per key; RFC 7693 describes the compression function.
"""
from __future__ import annotations

import hashlib
import struct

import numba
import numpy as np
import pyarrow as pa

from shared.hashspec import PERSON

_IV = np.array([
    0x6A09E667F3BCC908, 0xBB67AE8584CAA73B, 0x3C6EF372FE94F82B, 0xA54FF53A5F1D36F1,
    0x510E527FADE682D1, 0x9B05688C2B3E6C1F, 0x1F83D9ABFB41BD6B, 0x5BE0CD19137E2179], dtype=np.uint64)
_SIGMA = np.array([
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
    [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3],
    [11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4],
    [7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8],
    [9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13],
    [2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9],
    [12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11],
    [13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10],
    [6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5],
    [10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0],
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
    [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3]], dtype=np.int64)


_R32, _R24, _R16, _R63 = np.uint64(32), np.uint64(24), np.uint64(16), np.uint64(63)
_L32, _L40, _L48, _L1 = np.uint64(32), np.uint64(40), np.uint64(48), np.uint64(1)


@numba.njit(cache=True, nogil=True, inline="always")
def _g(a: np.uint64, b: np.uint64, c: np.uint64, d: np.uint64, x: np.uint64, y: np.uint64
       ) -> tuple[np.uint64, np.uint64, np.uint64, np.uint64]:
    a = a + b + x
    d = d ^ a
    d = (d >> _R32) | (d << _L32)
    c = c + d
    b = b ^ c
    b = (b >> _R24) | (b << _L40)
    a = a + b + y
    d = d ^ a
    d = (d >> _R16) | (d << _L48)
    c = c + d
    b = b ^ c
    b = (b >> _R63) | (b << _L1)
    return a, b, c, d


@numba.njit(cache=True, nogil=True)
def _compress(h: np.ndarray, m: np.ndarray, t: np.uint64, last: bool, iv: np.ndarray, sigma: np.ndarray) -> None:
    """One BLAKE2b compression of block ``m`` (16 little-endian u64) into ``h``; the working vector
    lives in 16 locals so the compiler keeps it in registers."""
    v0, v1, v2, v3, v4, v5, v6, v7 = h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]
    v8, v9, v10, v11, v12, v13, v14, v15 = iv[0], iv[1], iv[2], iv[3], iv[4], iv[5], iv[6], iv[7]
    v12 = v12 ^ t
    if last:
        v14 = ~v14
    for r in range(12):
        s = sigma[r]
        v0, v4, v8, v12 = _g(v0, v4, v8, v12, m[s[0]], m[s[1]])
        v1, v5, v9, v13 = _g(v1, v5, v9, v13, m[s[2]], m[s[3]])
        v2, v6, v10, v14 = _g(v2, v6, v10, v14, m[s[4]], m[s[5]])
        v3, v7, v11, v15 = _g(v3, v7, v11, v15, m[s[6]], m[s[7]])
        v0, v5, v10, v15 = _g(v0, v5, v10, v15, m[s[8]], m[s[9]])
        v1, v6, v11, v12 = _g(v1, v6, v11, v12, m[s[10]], m[s[11]])
        v2, v7, v8, v13 = _g(v2, v7, v8, v13, m[s[12]], m[s[13]])
        v3, v4, v9, v14 = _g(v3, v4, v9, v14, m[s[14]], m[s[15]])
    h[0] ^= v0 ^ v8
    h[1] ^= v1 ^ v9
    h[2] ^= v2 ^ v10
    h[3] ^= v3 ^ v11
    h[4] ^= v4 ^ v12
    h[5] ^= v5 ^ v13
    h[6] ^= v6 ^ v14
    h[7] ^= v7 ^ v15


@numba.njit(cache=True, nogil=True)
def digest_one(state: np.ndarray, prefix: np.ndarray, data: np.ndarray, start: int, stop: int,
               h: np.ndarray, block: np.ndarray) -> np.uint64:
    """Digest (first 8 bytes, little-endian) of ``prefix + data[start:stop]`` from the keyed
    ``state``; ``h`` (8 u64) and ``block`` (128 u8) are the caller's scratch, so a loop allocates
    nothing per message."""
    m = block.view(np.uint64)
    for k in range(8):
        h[k] = state[k]
    plen = prefix.shape[0]
    total = plen + (stop - start)
    t = np.uint64(128)  # the key block is already in ``state``
    if total <= 128:  # the common case: one block, filled by slices instead of byte by byte
        for k in range(16):
            m[k] = 0
        block[:plen] = prefix
        block[plen:total] = data[start:stop]
        _compress(h, m, t + np.uint64(total), True, _IV, _SIGMA)
        return h[0]
    fill = 0
    pos = 0
    while True:
        while fill < 128 and pos < total:  # fill the block from prefix, then the value
            block[fill] = prefix[pos] if pos < plen else data[start + pos - plen]
            fill += 1
            pos += 1
        last = pos == total  # else the block is full and more data follows
        if last:
            for k in range(fill, 128):
                block[k] = 0
        t = t + np.uint64(fill)
        _compress(h, m, t, last, _IV, _SIGMA)
        if last:
            break
        fill = 0
    return h[0]


@numba.njit(cache=True, nogil=True)
def _hash_values(state: np.ndarray, prefix: np.ndarray, data: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Digest of ``prefix + data[offsets[i]:offsets[i+1]]`` for each i."""
    n = offsets.shape[0] - 1
    out = np.empty(n, dtype=np.uint64)
    h = np.empty(8, dtype=np.uint64)
    block = np.zeros(128, dtype=np.uint8)
    for i in range(n):
        out[i] = digest_one(state, prefix, data, offsets[i], offsets[i + 1], h, block)
    return out


class KeyedBlake2:
    """Batch hashing under one key; ``digests`` equals FeatureHasher.digest64 of each message."""

    def __init__(self, key: bytes) -> None:
        if not 1 <= len(key) <= 64:
            raise ValueError("BLAKE2b keys are 1..64 bytes")
        h = _IV.copy()
        h[0] ^= np.uint64(0x01010000 | (len(key) << 8) | 8)
        h[6] ^= np.uint64(struct.unpack("<Q", PERSON.ljust(16, b"\0")[:8])[0])
        h[7] ^= np.uint64(struct.unpack("<Q", PERSON.ljust(16, b"\0")[8:])[0])
        block = np.zeros(128, dtype=np.uint8)
        block[:len(key)] = np.frombuffer(key, dtype=np.uint8)
        _compress(h, block.view(np.uint64), np.uint64(128), False, _IV, _SIGMA)
        self._state = h
        self._check = hashlib.blake2b(b"x\x1fy", key=key, digest_size=8, person=PERSON).digest()
        if int(self.digests(b"x", np.frombuffer(b"y", np.uint8), np.array([0, 1], np.int64))[0]) != \
                struct.unpack("<Q", self._check)[0]:
            raise RuntimeError("numba BLAKE2b disagrees with hashlib")  # never expected: a guard

    @property
    def state(self) -> np.ndarray:
        """The keyed prefix state (parameter and key blocks compressed), for other kernels."""
        return self._state

    def digests(self, field: bytes, data: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Digests of ``field + 0x1F + value`` for the values in an Arrow-style (data, offsets) buffer."""
        prefix = np.frombuffer(field + b"\x1f", dtype=np.uint8)
        return _hash_values(self._state, prefix, data, offsets.astype(np.int64, copy=False))

    def digest_strings(self, field: bytes, values: pa.Array) -> np.ndarray:
        """Digests of ``field + 0x1F + value`` for each value of an Arrow string array (no nulls):
        its own offset and data buffers go to the kernel, no Python object per value."""
        values = pa.concat_arrays([values.cast(pa.string())])  # offsets start at its own buffer
        bufs = values.buffers()
        offsets = np.frombuffer(bufs[1], dtype=np.int32, count=len(values) + 1,
                                offset=4 * values.offset).astype(np.int64)
        data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
        return self.digests(field, data, offsets)
