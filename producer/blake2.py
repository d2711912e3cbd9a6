"""Keyed BLAKE2b-64 of many short messages in one numba call (the columnar path's hash kernel).

Computes exactly ``hashlib.blake2b(prefix + value, key=key, digest_size=8, person=PERSON)`` for
every value of an Arrow string buffer (offsets + bytes), so a column batch's distinct values are
hashed without creating a Python object per value. The keyed prefix state (parameter block and the
key block) is computed once per key; RFC 7693 describes the compression function.

Why the compression function is generated: with the message schedule (SIGMA) read from an array,
each G loaded its two message words through an index loaded from memory (~295 ns per one-block
message on this machine). :func:`_compress` is generated once at import with the 12 rounds
unrolled and the schedule as constant word names, so the 16 message words sit in locals and the
rounds are straight-line code: ~160 ns a compression, ~195 ns per one-block message (~560 ns for
two blocks, was ~830), near the ~140 ns that 1,344 scalar ALU operations need at four a cycle.
(A variant for messages of up to 16 bytes, with the 14 zero words folded away, gained under 5%
and was left out.) The source is compiled under this file's name, so numba caches it like any
other kernel here, keyed to this file's timestamp.
"""
from __future__ import annotations

import hashlib
import struct
from typing import Any

import numba
import numpy as np
import pyarrow as pa

from shared.hashspec import PERSON

_IV = (0x6A09E667F3BCC908, 0xBB67AE8584CAA73B, 0x3C6EF372FE94F82B, 0xA54FF53A5F1D36F1,
       0x510E527FADE682D1, 0x9B05688C2B3E6C1F, 0x1F83D9ABFB41BD6B, 0x5BE0CD19137E2179)
_SIGMA = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
    (14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3),
    (11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4),
    (7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8),
    (9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13),
    (2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9),
    (12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11),
    (13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10),
    (6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5),
    (10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0),
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
    (14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3))
# the (a, b, c, d) working-vector words of the 8 G calls of a round: 4 columns, then 4 diagonals
_LANES = ((0, 4, 8, 12), (1, 5, 9, 13), (2, 6, 10, 14), (3, 7, 11, 15),
          (0, 5, 10, 15), (1, 6, 11, 12), (2, 7, 8, 13), (3, 4, 9, 14))
_IVW = tuple(np.uint64(x) for x in _IV)  # numba freezes a global tuple as constants
_R32, _R24, _R16, _R63 = np.uint64(32), np.uint64(24), np.uint64(16), np.uint64(63)
_L32, _L40, _L48, _L1 = np.uint64(32), np.uint64(40), np.uint64(48), np.uint64(1)
_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)
_BLOCK = np.uint64(128)


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


def _compress_source() -> str:
    """``_compress(h, m, t, final)``: one compression of block ``m`` (16 little-endian u64) into the
    chain value ``h`` (an 8-tuple), returned as a new 8-tuple; ``final`` is all ones on the last block."""
    v = [f"v{i}" for i in range(16)]
    lines = ["def _compress(h, m, t, final):",
             "    " + ", ".join(f"m{i}" for i in range(16)) + " = " + ", ".join(f"m[{i}]" for i in range(16)),
             "    " + ", ".join(v[:8]) + " = h",
             "    " + ", ".join(v[8:]) + " = _IVW",
             "    v12 = v12 ^ t",
             "    v14 = v14 ^ final"]
    for s in _SIGMA:
        for k, lane in enumerate(_LANES):
            abcd = ", ".join(v[i] for i in lane)
            lines.append(f"    {abcd} = _g({abcd}, m{s[2 * k]}, m{s[2 * k + 1]})")
    lines.append("    return (" + ", ".join(f"h[{i}] ^ v{i} ^ v{i + 8}" for i in range(8)) + ")")
    return "\n".join(lines) + "\n"


_made: dict[str, Any] = {}  # the def runs with this module's globals, under this file's name
exec(compile(_compress_source(), __file__, "exec"), globals(), _made)
_compress = numba.njit(cache=True, nogil=True)(_made.pop("_compress"))


@numba.njit(cache=True, nogil=True)
def digest_one(state: np.ndarray, prefix: np.ndarray, data: np.ndarray, start: int, stop: int,
               block: np.ndarray) -> np.uint64:
    """Digest (first 8 bytes, little-endian) of ``prefix + data[start:stop]`` from the keyed
    ``state``; ``block`` (16 u64) is the caller's scratch, so a loop allocates nothing per message."""
    buf = block.view(np.uint8)
    h = (state[0], state[1], state[2], state[3], state[4], state[5], state[6], state[7])
    plen = prefix.shape[0]
    total = plen + (stop - start)
    t = _BLOCK  # the key block is already in ``state``
    if total <= 128:  # the common case: one block
        for k in range(16):
            block[k] = 0
        for k in range(plen):
            buf[k] = prefix[k]
        for k in range(stop - start):
            buf[plen + k] = data[start + k]
        return _compress(h, block, t + np.uint64(total), _ONES)[0]
    pos = 0
    while True:  # more than one block; the last one holds the last byte (and may be full)
        fill = min(128, total - pos)
        for k in range(fill):
            p = pos + k
            buf[k] = prefix[p] if p < plen else data[start + p - plen]
        for k in range(fill, 128):
            buf[k] = 0
        pos += fill
        t = t + np.uint64(fill)
        if pos == total:
            return _compress(h, block, t, _ONES)[0]
        h = _compress(h, block, t, np.uint64(0))


@numba.njit(cache=True, nogil=True)
def _hash_values(state: np.ndarray, prefix: np.ndarray, data: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Digest of ``prefix + data[offsets[i]:offsets[i+1]]`` for each i."""
    n = offsets.shape[0] - 1
    out = np.empty(n, dtype=np.uint64)
    block = np.empty(16, dtype=np.uint64)
    for i in range(n):
        out[i] = digest_one(state, prefix, data, offsets[i], offsets[i + 1], block)
    return out


@numba.njit(cache=True, nogil=True)
def _key_state(param: np.ndarray, key_block: np.ndarray) -> np.ndarray:
    """The chain value after the key block, from the parameter-block words XORed into the IV."""
    h = _compress((param[0], param[1], param[2], param[3], param[4], param[5], param[6], param[7]),
                  key_block, _BLOCK, np.uint64(0))
    out = np.empty(8, dtype=np.uint64)
    for k in range(8):
        out[k] = h[k]
    return out


class KeyedBlake2:
    """Batch hashing under one key; ``digests`` equals FeatureHasher.digest64 of each message."""

    def __init__(self, key: bytes) -> None:
        if not 1 <= len(key) <= 64:
            raise ValueError("BLAKE2b keys are 1..64 bytes")
        param = np.array(_IV, dtype=np.uint64)
        param[0] ^= np.uint64(0x01010000 | (len(key) << 8) | 8)
        param[6:] ^= np.frombuffer(PERSON.ljust(16, b"\0")[:16], dtype="<u8")
        key_block = np.zeros(16, dtype=np.uint64)
        key_block.view(np.uint8)[:len(key)] = np.frombuffer(key, dtype=np.uint8)
        self._state = _key_state(param, key_block)
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
