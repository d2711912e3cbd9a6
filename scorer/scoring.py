"""Turning one score request message into one reply: a prediction frame or an error frame.

Kept free of Kafka so it can be tested alone. A request the scorer cannot serve still gets a
reply, so the data owner's client never waits for an answer that will not come.
"""
from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from scorer.kernels import predict_csr, serve_small_frames
from shared.errors import FrameError, HashbridgeError
from shared.frames import (FRAME_VERSION, HEADER, HEADER_SIZE, MAGIC, Frame, Kind, decode, encode_error,
                           encode_score, require_spec)
from shared.hashspec import SPEC_VERSION, Algorithm, SpecId
from shared.models import ModelSnapshot

# Stands in for a spec when a frame is too broken to name its own and no model is loaded.
NULL_SPEC = SpecId(Algorithm.BLAKE2B_KEYED, 1, False, b"\0" * 8)
_EMPTY_IDS = np.zeros(0, np.uint64)
_EMPTY_F32 = np.zeros(0, np.float32)
_EMPTY_F32.flags.writeable = False  # same array type as frame views: one compiled kernel variant
NO_MODEL = "no_model"


@dataclass(frozen=True, slots=True)
class Reply:
    """What to send back for one request: ``reason`` is empty for a prediction."""

    value: bytes
    n_records: int
    model_version: int
    reason: str = ""
    detail: str = ""

    @property
    def ok(self) -> bool:
        return not self.reason


def predict(model: ModelSnapshot, frame: Frame) -> np.ndarray:
    """Probabilities of a decoded score frame; refuses frames of another spec."""
    require_spec(frame, model.spec)
    out = np.empty(frame.n_records, np.float64)
    values = frame.values if frame.values is not None else _EMPTY_F32
    predict_csr(model.weights, float(model.bias), frame.offsets, frame.indices, values, out)
    return out


def predict_numpy(model: ModelSnapshot, offsets: np.ndarray, indices: np.ndarray,
                  values: np.ndarray | None = None) -> np.ndarray:
    """The same model applied with plain numpy: the reference the kernel is tested against."""
    contrib = model.weights[indices].astype(np.float64)
    if values is not None:
        contrib = contrib * values
    rows = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets.astype(np.int64)))
    z = model.bias + np.bincount(rows, weights=contrib, minlength=len(offsets) - 1)
    return 1.0 / (1.0 + np.exp(-z))


def prediction_frame(model: ModelSnapshot, frame: Frame) -> bytes:
    """The prediction frame for a score frame of ``model``'s spec, built in one buffer.

    Same bytes as ``encode_prediction(frame.spec, ids, predict(model, frame), model.version)``
    (tested), with fewer copies: the kernel writes the probabilities straight into the reply
    buffer, the request ids are copied once, and one final copy makes it ``bytes`` (what the
    Kafka client takes). ``8 * n`` is a multiple of 8, so neither section needs padding.
    """
    require_spec(frame, model.spec)
    n, s = frame.n_records, frame.spec
    buf = bytearray(HEADER_SIZE + 16 * n)
    HEADER.pack_into(buf, 0, MAGIC, FRAME_VERSION, int(Kind.PREDICTION), 0, int(s.algorithm), s.bits,
                     int(s.signed), s.version, s.key_id, n, 0, 0, model.version)
    np.frombuffer(buf, "<u8", n, HEADER_SIZE)[:] = frame.request_ids
    out = np.frombuffer(buf, "<f8", n, HEADER_SIZE + 8 * n)
    values = frame.values if frame.values is not None else _EMPTY_F32
    predict_csr(model.weights, float(model.bias), frame.offsets, frame.indices, values, out)
    return bytes(buf)


def error_reply(spec: SpecId, ids: np.ndarray, reason: str, detail: str, version: int) -> Reply:
    return Reply(encode_error(spec, ids, reason, version), int(ids.shape[0]), version, reason, detail)


def serve(value: bytes | None, model: ModelSnapshot | None) -> Reply:
    """Score one request message with ``model`` (None: no model yet), or explain why not."""
    version = model.version if model is not None else 0
    try:
        frame = decode(value or b"", expect=Kind.SCORE)
    except FrameError as exc:
        return error_reply(model.spec if model else NULL_SPEC, _EMPTY_IDS, exc.reason, str(exc), version)
    if model is None:
        return error_reply(frame.spec, frame.request_ids, NO_MODEL, "no model loaded yet", 0)
    try:
        return Reply(prediction_frame(model, frame), frame.n_records, version)
    except HashbridgeError as exc:
        return error_reply(frame.spec, frame.request_ids, exc.reason, str(exc), version)


# Frames up to this size are validated and scored together, in one kernel call per batch; larger
# ones go through ``serve`` one by one (their per-frame Python cost is small next to the kernel).
SMALL_FRAME_BYTES = 64 * 1024


def _reply_head(model: ModelSnapshot) -> np.ndarray:
    s = model.spec
    return np.frombuffer(HEADER.pack(MAGIC, FRAME_VERSION, int(Kind.PREDICTION), 0, int(s.algorithm), s.bits,
                                     int(s.signed), s.version, s.key_id, 0, 0, 0, model.version), "<u4")


def _serve_each(values: Sequence[bytes | None], model: ModelSnapshot | None,
                pool: Executor | None) -> list[Reply]:
    """``serve`` for each value, on ``pool``'s threads when it has more than one value (the kernel
    releases the GIL: large frames are scored on both cores while the loop's thread decodes,
    copies and produces)."""
    if pool is None or len(values) < 2:
        return [serve(v, model) for v in values]
    return list(pool.map(serve, values, [model] * len(values)))


def serve_many(values: Sequence[bytes | None], model: ModelSnapshot | None,
               pool: Executor | None = None) -> list[Reply]:
    """``[serve(v, model) for v in values]``, with the small frames served by one kernel call
    and the large ones on ``pool`` (if given).

    Single-record requests cost ~40 us each through ``decode`` + ``serve`` (Python and numpy call
    overhead), which capped latency mode near 10,000 requests/s. Here every small frame is
    checked by ``kernels.serve_small_frames`` with the same rules as the reference decoder and
    scored in the same order as ``predict_csr``, so the reply bytes are identical (tested against
    ``serve`` on valid, foreign and corrupted frames); a frame the kernel does not accept goes
    through ``serve``, which names the reason.
    """
    if model is None or model.spec.version != SPEC_VERSION:
        return [serve(v, model) for v in values]
    small = [i for i, v in enumerate(values)
             if v is not None and HEADER_SIZE <= len(v) <= SMALL_FRAME_BYTES and len(v) % 8 == 0]
    if len(small) < 2:
        return _serve_each(values, model, pool)
    joined = b"".join([values[i] for i in small])  # type: ignore[misc]
    bounds = np.zeros(len(small) + 1, np.int64)
    np.cumsum(np.fromiter((len(values[i]) for i in small), np.int64, len(small)),  # type: ignore[arg-type]
              out=bounds[1:])
    out = np.empty(len(joined) // 4 + 5 * len(small) + 1, np.uint64)  # >= 10 + 4n words per frame
    out_words = out.view(np.uint32)
    spans = np.empty((len(small), 3), np.int64)
    serve_small_frames(np.frombuffer(joined, "<u4"), np.frombuffer(joined, "<f4"), bounds, _reply_head(model),
                       model.weights, float(model.bias), out_words, out.view(np.float64), spans)
    replies: list[Reply | None] = [None] * len(values)
    version = model.version
    for i, (start, n_words, n) in zip(small, spans.tolist()):
        if n_words:
            replies[i] = Reply(out_words[start:start + n_words].tobytes(), n, version)
    rest = [i for i, r in enumerate(replies) if r is None]  # large frames, and small ones refused
    for i, reply in zip(rest, _serve_each([values[i] for i in rest], model, pool)):
        replies[i] = reply
    return replies  # type: ignore[return-value]


def warm_up() -> None:
    """Compile the kernel for the array types it meets (read-only frame views, and read-only
    weights of a watcher's snapshot) before serving, so no request waits for numba."""
    for w_ro in (False, True):
        w = np.zeros(2, np.float32)
        w.flags.writeable = not w_ro
        for ro in (False, True):
            offs, idx, vals = np.array([0, 1], np.uint32), np.array([1], np.uint32), np.ones(1, np.float32)
            if ro:
                for a in (offs, idx, vals):
                    a.flags.writeable = False
            for out in (np.empty(1), np.frombuffer(bytearray(8), np.float64)):  # reply buffers too
                predict_csr(w, 0.0, offs, idx, vals, out)
                predict_csr(w, 0.0, offs, idx, _EMPTY_F32, out)
        spec = SpecId(Algorithm.BLAKE2B_KEYED, 1, False, b"\0" * 8)
        snap = ModelSnapshot(1, spec, w, 0.0, 0, 0.0)
        one = encode_score(spec, np.array([1], np.uint64), np.array([0, 1], np.uint32), np.array([1], np.uint32))
        serve_many([one, one], snap)  # compiles serve_small_frames for views of bytes
