"""Turning one score request message into one reply: a prediction frame or an error frame.

Kept free of Kafka so it can be tested alone. A request the scorer cannot serve still gets a
reply, so the data owner's client never waits for an answer that will not come.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scorer.kernels import predict_csr
from shared.errors import FrameError, HashbridgeError
from shared.frames import (FRAME_VERSION, HEADER, HEADER_SIZE, MAGIC, Frame, Kind, decode, encode_error,
                           require_spec)
from shared.hashspec import Algorithm, SpecId
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
