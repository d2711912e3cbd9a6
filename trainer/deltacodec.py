"""The wire form of a delta, and the float16 quantisation that halves it (docs/scale-out.md).

At 2^20 buckets a delta touches nearly every coordinate, so its size follows the model, not the
records; what is left to shrink is the bytes per coordinate. Values are sent as float16 scaled
by a power of two per column (``scale``: no overflow, no loss of relative precision for large
changes) and laid out in byte planes (all high bytes, then all low bytes), which zlib packs far
better than interleaved floats. The quantisation is done by :func:`quantise` *before* the delta
is built, so ``Delta.values`` are exactly what every reader adds; the encoding is lossless.

Nothing is lost over time (error feedback): a reader adds the quantised values to its accepted
cut ``copy``, and the publisher's next delta is ``state - copy`` again, so the rounding error and
every coordinate held back as too small are still in it. A final delta (clean stop) is exact.
"""
from __future__ import annotations

import json
import struct
import time
import zlib
from dataclasses import dataclass, field

import numba
import numpy as np

from shared.errors import HashbridgeError

MAGIC_V1 = b"HBD1"  # f32, interleaved: still read, never written
MAGIC = b"HBD2"
F16_SPAN = 32768.0  # a column's largest |change| scaled into (F16_SPAN/2, F16_SPAN]: below f16 max
HOLD = 2.0 ** -16  # coordinates whose changes are all below HOLD * column max wait for a later delta


class DeltaError(HashbridgeError):
    reason = "bad_delta"


@dataclass(frozen=True, slots=True, eq=False)
class Delta:
    """One instance's learning between two syncs; ``claims``: partition -> (start, end) offsets
    of ``hb.train`` (start -1: from the beginning of a partition nobody had claimed).
    ``scale``: None for exact float32 values, else the per-column power-of-two exponents with
    which ``values`` are exact float16 numbers."""

    instance: str
    seq: int
    records: int
    claims: dict[int, tuple[int, int]]
    index: np.ndarray  # uint32, strictly increasing
    values: np.ndarray  # float32[n, 2]: weight (or z) and accumulator changes
    bias: np.ndarray = field(default_factory=lambda: np.zeros(2))  # float64[2]
    sample: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    created_at: float = field(default_factory=time.time)
    scale: tuple[int, int] | None = None


@numba.njit(cache=True, nogil=True)
def _touched(state: np.ndarray, copy: np.ndarray, out: np.ndarray) -> int:
    """Rows of ``state - copy`` with a non-zero change into ``out``; returns how many."""
    n = 0
    for j in range(state.shape[0]):
        if state[j, 0] - copy[j, 0] != 0 or state[j, 1] - copy[j, 1] != 0:
            out[n] = j
            n += 1
    return n


@numba.njit(cache=True, nogil=True)
def add_rows(state: np.ndarray, index: np.ndarray, values: np.ndarray) -> None:
    """``state[index] += values`` for a delta's strictly increasing ``index`` (so no row twice):
    the same float32 sums as numpy's fancy-index add, which cost the supervisor ~18% of its
    time with peers' deltas of ~10^5-10^6 rows arriving several times a second."""
    for k in range(index.shape[0]):
        j = index[k]
        state[j, 0] += values[k, 0]
        state[j, 1] += values[k, 1]


def diff_delta(state: np.ndarray, copy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Touched coordinates (weight or accumulator changed) and their float32 changes.

    One pass over both arrays in numba, then the changes of the touched rows only: the numpy
    form (``state - copy`` whole, a mask, ``any``) made three model-sized temporaries and cost
    the supervisor ~91 ms per delta at 2^22 buckets (~22 at 2^20), with the workers paused."""
    out = np.empty(state.shape[0], np.uint32)  # pages only touched as far as written
    idx = out[:_touched(state, copy, out)].copy()
    return idx, state[idx] - copy[idx]


def quantise(index: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Float16 values scaled per column by ``2**scale``; coordinates that round to zero or whose
    changes are all below ``HOLD`` x the column's largest are left out (carried to a later delta).

    Per coordinate, what is not sent is at most ``max(2**-11 |change|, HOLD * column max)`` plus
    f16 underflow (``2**(scale-25)``); it stays in ``state - copy`` for the next delta.
    """
    if index.size == 0:
        return index, values.astype(np.float32), (0, 0)
    top = np.abs(values).max(axis=0).astype(np.float64)
    exps = np.where(top > 0, np.ceil(np.log2(np.maximum(top, 1e-300) / F16_SPAN)), 0)
    exps = np.clip(exps, -60, 60).astype(np.int32)
    q = np.ldexp(values, -exps).astype(np.float16)
    keep = (q != 0).any(axis=1) & ((np.abs(values) >= top * HOLD) & (top > 0)).any(axis=1)
    deq = np.ldexp(q[keep].astype(np.float32), exps)
    return index[keep], deq, (int(exps[0]), int(exps[1]))


def _planes(a: np.ndarray) -> bytes:
    """Columns one after the other, each as byte planes (all first bytes, all second bytes...)."""
    a = np.ascontiguousarray(a.T if a.ndim == 2 else a)
    return np.ascontiguousarray(a.view(np.uint8).reshape(*a.shape, a.itemsize).swapaxes(-1, -2)).tobytes()


def _unplanes(buf: bytes, dtype: type, n: int, cols: int) -> np.ndarray:
    size = np.dtype(dtype).itemsize
    raw = np.frombuffer(buf, np.uint8, n * cols * size).reshape(cols, size, n).swapaxes(-1, -2)
    return np.ascontiguousarray(raw).view(dtype).reshape(cols, n)


def encode_delta(d: Delta) -> bytes:
    head = json.dumps({"instance": d.instance, "seq": d.seq, "records": d.records,
                       "created_at": d.created_at, "n": int(d.index.size), "m": int(d.sample.size),
                       "scale": list(d.scale) if d.scale is not None else None,
                       "claims": [[p, s, e] for p, (s, e) in sorted(d.claims.items())]}).encode()
    gaps = np.diff(d.index.astype(np.int64), prepend=0).astype(np.uint32)
    vals = np.asarray(d.values, np.float32).reshape(-1, 2)
    if d.scale is not None:
        vals = np.ldexp(vals, -np.asarray(d.scale, np.int32)).astype(np.float16)  # exact: quantised
    body = b"".join((_planes(gaps), _planes(vals), np.asarray(d.bias, np.float64).tobytes(),
                     d.sample.astype(np.float32).tobytes()))
    return MAGIC + struct.pack("<I", len(head)) + head + zlib.compress(body, 1)


def decode_delta(buf: bytes, size: int | None = None) -> Delta:
    """Decode and validate (lengths, index order and range) or raise :class:`DeltaError`."""
    if len(buf) < 8 or buf[:4] not in (MAGIC, MAGIC_V1):
        raise DeltaError("not a delta")
    v1 = buf[:4] == MAGIC_V1
    (hl,) = struct.unpack_from("<I", buf, 4)
    try:
        h = json.loads(buf[8:8 + hl])
        body = zlib.decompress(buf[8 + hl:])
        n, m = int(h["n"]), int(h["m"])
        claims = {int(p): (int(s), int(e)) for p, s, e in h["claims"]}
        scale = None if v1 or h["scale"] is None else (int(h["scale"][0]), int(h["scale"][1]))
    except (ValueError, KeyError, TypeError, IndexError, zlib.error) as exc:
        raise DeltaError(f"bad delta header or body: {exc}") from exc
    vbytes = 2 * n * (2 if scale is not None else 4)
    if len(body) != n * 4 + vbytes + 16 + m * 4:
        raise DeltaError("delta length mismatch")
    if v1:
        gaps = np.frombuffer(body, np.uint32, n)
        values = np.frombuffer(body, np.float32, 2 * n, 4 * n).reshape(n, 2)
    else:
        gaps = _unplanes(body[:4 * n], np.uint32, n, 1)[0]
        raw = _unplanes(body[4 * n:4 * n + vbytes], np.float16 if scale else np.float32, n, 2).T
        values = np.ldexp(raw.astype(np.float32), np.asarray(scale, np.int32)) if scale else raw
    index = np.cumsum(gaps, dtype=np.int64)
    if n and (index[-1] >= (size if size is not None else 1 << 32) or np.any(np.diff(index) <= 0)):
        raise DeltaError("delta index out of range or not increasing")
    if not np.isfinite(values).all():
        raise DeltaError("delta values must be finite")
    bias = np.frombuffer(body, np.float64, 2, 4 * n + vbytes)
    sample = np.frombuffer(body, np.float32, m, 4 * n + vbytes + 16)
    return Delta(str(h["instance"]), int(h["seq"]), int(h["records"]), claims, index.astype(np.uint32),
                 np.ascontiguousarray(values, np.float32), bias, sample, float(h["created_at"]), scale)
