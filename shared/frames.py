"""The frame codec: many records per Kafka message, in a layout numpy reads without copying.

Layout (little-endian; written up in ``docs/wire-format.md`` with hex test vectors): a 40-byte
header, then arrays, each padded with zero bytes to a multiple of 8 so every array is aligned.

    train:      labels u8[n], weights f32[n]?, offsets u32[n+1], indices u32[nnz], values f32[nnz]?
    score:      request_ids u64[n], offsets u32[n+1], indices u32[nnz], values f32[nnz]?
    prediction: request_ids u64[n], probabilities f64[n]
    error:      request_ids u64[n], reason utf-8[aux]

Decoding validates every length, offset, index and label against the header and raises
:class:`~shared.errors.FrameError` with a short reason, the only error it raises.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from shared.errors import FrameError, SpecMismatch
from shared.hashspec import MAX_BITS, SPEC_VERSION, Algorithm, SpecId

MAGIC = b"HBFR"
FRAME_VERSION = 1
HEADER = struct.Struct("<4sBBHBBBB8sIIIQ")
HEADER_SIZE = HEADER.size  # 40
FLAG_WEIGHTS = 1  # per-record weights (train)
FLAG_VALUES = 2  # per-index values (signs of signed hashing, or opt-in raw numbers)
_KNOWN_FLAGS = FLAG_WEIGHTS | FLAG_VALUES
# Kafka header of an empty train frame a producer sends to every partition once all of its input's
# frames are acknowledged: a trainer that has learned up to such a marker on every partition it
# reads checkpoints at once instead of waiting for its input to go quiet (docs/wire-format.md)
END_HEADER = "hb-end"
# explicit little-endian dtypes: the layout is little-endian on every host
_U8, _U32, _U64 = np.dtype("u1"), np.dtype("<u4"), np.dtype("<u8")
_F32, _F64 = np.dtype("<f4"), np.dtype("<f8")
_EMPTY_U32 = np.zeros(0, _U32)
_EMPTY_U32.flags.writeable = False


class Kind(IntEnum):
    TRAIN = 1
    SCORE = 2
    PREDICTION = 3
    ERROR = 4


def _pad(n: int) -> int:
    return (n + 7) & ~7


@dataclass(frozen=True, slots=True, eq=False)
class Frame:
    """A decoded frame; array fields are read-only views into the message buffer."""

    kind: Kind
    spec: SpecId
    n_records: int
    offsets: np.ndarray  # u32[n+1] (train, score); empty otherwise
    indices: np.ndarray  # u32[nnz]
    labels: np.ndarray | None = None  # u8[n] (train)
    weights: np.ndarray | None = None  # f32[n] (train, optional)
    values: np.ndarray | None = None  # f32[nnz] (optional)
    request_ids: np.ndarray | None = None  # u64[n] (score, prediction, error)
    probabilities: np.ndarray | None = None  # f64[n] (prediction)
    model_version: int = 0
    reason: str = ""  # error frames

    @property
    def n_indices(self) -> int:
        return int(self.indices.shape[0])


def _header(kind: Kind, spec: SpecId, flags: int, n: int, nnz: int, aux: int, model_version: int) -> bytes:
    return HEADER.pack(MAGIC, FRAME_VERSION, int(kind), flags, int(spec.algorithm), spec.bits,
                       int(spec.signed), spec.version, spec.key_id, n, nnz, aux, model_version)


def _section(arr: np.ndarray, dtype: np.dtype | type) -> bytes:
    raw = np.ascontiguousarray(arr, dtype=dtype).tobytes()
    return raw + b"\0" * (_pad(len(raw)) - len(raw))


def _check_csr(n: int, offsets: np.ndarray, indices: np.ndarray, values: np.ndarray | None) -> None:
    if offsets.shape != (n + 1,) or int(offsets[0]) != 0 or int(offsets[-1]) != indices.shape[0]:
        raise ValueError("offsets must have n+1 entries from 0 to len(indices)")
    if values is not None and values.shape != indices.shape:
        raise ValueError("one value per index")


def encode_train(spec: SpecId, labels: np.ndarray, offsets: np.ndarray, indices: np.ndarray,
                 weights: np.ndarray | None = None, values: np.ndarray | None = None) -> bytes:
    """Encode a training frame; ``offsets`` are CSR row starts (``n+1`` entries)."""
    n, nnz = int(labels.shape[0]), int(indices.shape[0])
    _check_csr(n, offsets, indices, values)
    if weights is not None and weights.shape != (n,):
        raise ValueError("one weight per record")
    flags = (FLAG_WEIGHTS if weights is not None else 0) | (FLAG_VALUES if values is not None else 0)
    parts = [_header(Kind.TRAIN, spec, flags, n, nnz, 0, 0), _section(labels, _U8)]
    if weights is not None:
        parts.append(_section(weights, _F32))
    parts += [_section(offsets, _U32), _section(indices, _U32)]
    if values is not None:
        parts.append(_section(values, _F32))
    return b"".join(parts)


def encode_score(spec: SpecId, request_ids: np.ndarray, offsets: np.ndarray, indices: np.ndarray,
                 values: np.ndarray | None = None) -> bytes:
    """Encode a score request frame; request ids are opaque to the learner's side."""
    n, nnz = int(request_ids.shape[0]), int(indices.shape[0])
    _check_csr(n, offsets, indices, values)
    flags = FLAG_VALUES if values is not None else 0
    parts = [_header(Kind.SCORE, spec, flags, n, nnz, 0, 0), _section(request_ids, _U64),
             _section(offsets, _U32), _section(indices, _U32)]
    if values is not None:
        parts.append(_section(values, _F32))
    return b"".join(parts)


def encode_prediction(spec: SpecId, request_ids: np.ndarray, probabilities: np.ndarray,
                      model_version: int) -> bytes:
    n = int(request_ids.shape[0])
    if probabilities.shape != (n,):
        raise ValueError("one probability per request id")
    return b"".join([_header(Kind.PREDICTION, spec, 0, n, 0, 0, model_version),
                     _section(request_ids, _U64), _section(probabilities, _F64)])


def encode_error(spec: SpecId, request_ids: np.ndarray, reason: str, model_version: int = 0) -> bytes:
    """An error reply: the requests it names were not scored, for ``reason``."""
    raw = reason.encode("utf-8")
    return b"".join([_header(Kind.ERROR, spec, 0, int(request_ids.shape[0]), 0, len(raw), model_version),
                     _section(request_ids, _U64), raw + b"\0" * (_pad(len(raw)) - len(raw))])


class _Reader:
    """Hands out aligned array views and fails with one reason when the buffer runs short."""

    def __init__(self, buf: bytes | memoryview) -> None:
        self.buf, self.pos = buf, HEADER_SIZE

    def take(self, dtype: np.dtype, count: int) -> np.ndarray:
        size = dtype.itemsize * count
        if self.pos + size > len(self.buf):
            raise FrameError(f"frame truncated at byte {len(self.buf)}, needs {self.pos + size}", "truncated")
        arr = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos)
        arr.flags.writeable = False  # also when the buffer is a bytearray
        self.pos += _pad(size)
        return arr


def _decode_spec(algorithm: int, bits: int, signed: int, version: int, key_id: bytes) -> SpecId:
    if algorithm not in Algorithm._value2member_map_:
        raise FrameError(f"unknown hash algorithm {algorithm}", "bad_spec")
    if not 1 <= bits <= MAX_BITS or signed > 1 or version != SPEC_VERSION:
        raise FrameError(f"unsupported spec (bits={bits}, signed={signed}, version={version})", "bad_spec")
    return SpecId(Algorithm(algorithm), bits, bool(signed), key_id, version)


def _check_rows(n: int, nnz: int, bits: int, offsets: np.ndarray, indices: np.ndarray) -> None:
    if int(offsets[0]) != 0:  # also for n == 0: no stray indices outside every record
        raise FrameError("first offset is not 0", "offsets_start")
    if int(offsets[-1]) != nnz:
        raise FrameError(f"last offset {int(offsets[-1])} != index count {nnz}", "count_mismatch")
    if n and bool(np.any(offsets[1:] < offsets[:-1])):
        raise FrameError("offsets run backwards", "offsets_backwards")
    if nnz and int(indices.max()) >> bits:
        raise FrameError(f"index {int(indices.max())} >= 2^{bits}", "index_out_of_range")


def _check_finite(arr: np.ndarray, what: str, low: float | None = None, high: float | None = None) -> None:
    ok = bool(np.isfinite(arr).all())
    if ok and low is not None:
        ok = not bool((arr < low).any())
    if ok and high is not None:
        ok = not bool((arr > high).any())
    if not ok:
        bounds = "" if low is None else f" and in [{low}, {'inf' if high is None else high}]"
        raise FrameError(f"{what}s must be finite{bounds}", f"bad_{what}")


def decode(buf: bytes | memoryview, expect: Kind | None = None) -> Frame:
    """Decode and validate one frame; the arrays of the result are views into ``buf``."""
    if len(buf) < HEADER_SIZE:
        raise FrameError(f"frame of {len(buf)} bytes is shorter than its header", "truncated")
    (magic, version, kind, flags, algorithm, bits, signed, spec_version, kid,
     n, nnz, aux, model_version) = HEADER.unpack_from(buf, 0)
    if magic != MAGIC:
        raise FrameError("not a hashbridge frame (bad magic)", "bad_magic")
    if version != FRAME_VERSION:
        raise FrameError(f"frame version {version} is not supported", "bad_version")
    if kind not in Kind._value2member_map_:
        raise FrameError(f"unknown frame kind {kind}", "bad_kind")
    kind = Kind(kind)
    if expect is not None and kind is not expect:
        raise FrameError(f"expected a {expect.name.lower()} frame, got {kind.name.lower()}", "wrong_kind")
    if flags & ~_KNOWN_FLAGS:
        raise FrameError(f"unknown flags {flags:#x}", "bad_flags")
    if kind is Kind.SCORE and flags & FLAG_WEIGHTS:
        raise FrameError("score frames carry no weights", "bad_flags")
    if kind in (Kind.PREDICTION, Kind.ERROR) and flags:
        raise FrameError("prediction and error frames take no flags", "bad_flags")
    spec = _decode_spec(algorithm, bits, signed, spec_version, kid)
    r = _Reader(buf)
    labels = weights = values = request_ids = probabilities = None
    offsets = indices = _EMPTY_U32
    reason = ""
    if kind is Kind.TRAIN:
        labels = r.take(_U8, n)
        if flags & FLAG_WEIGHTS:
            weights = r.take(_F32, n)
    else:
        request_ids = r.take(_U64, n)
    if kind in (Kind.TRAIN, Kind.SCORE):
        offsets, indices = r.take(_U32, n + 1), r.take(_U32, nnz)
        if flags & FLAG_VALUES:
            values = r.take(_F32, nnz)
    else:
        if nnz:
            raise FrameError("prediction and error frames carry no indices", "count_mismatch")
        if kind is Kind.PREDICTION:
            probabilities = r.take(_F64, n)
        else:
            reason = bytes(r.take(_U8, aux)).decode("utf-8", errors="replace")
    if r.pos != len(buf):
        raise FrameError(f"frame is {len(buf)} bytes, its header describes {r.pos}", "length_mismatch")
    if kind in (Kind.TRAIN, Kind.SCORE):
        _check_rows(n, nnz, bits, offsets, indices)
    if labels is not None and n and int(labels.max()) > 1:
        raise FrameError("labels must be 0 or 1", "bad_label")
    if weights is not None:
        _check_finite(weights, "weight", low=0.0)
    if values is not None:
        _check_finite(values, "value")
    if probabilities is not None:
        _check_finite(probabilities, "probability", low=0.0, high=1.0)
    return Frame(kind, spec, n, offsets, indices, labels, weights, values, request_ids,
                 probabilities, model_version, reason)


def require_spec(frame: Frame, spec: SpecId) -> None:
    """Refuse a frame from another key space, bit width or algorithm than the model's."""
    if frame.spec != spec:
        raise SpecMismatch(f"frame spec {frame.spec} differs from model spec {spec}")
