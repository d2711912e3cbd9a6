"""Property tests of the frame decoder: whatever the bytes, it returns a valid Frame or raises FrameError.

Run the long profile with ``HYPOTHESIS_PROFILE=long pytest -m slow tests/unit/test_frames_fuzz.py``
(docs/fuzzing.md). The ``slow`` tests use at least SLOW_EXAMPLES examples, more under the profile.
"""
from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from shared.errors import FrameError
from shared.frames import (
    FRAME_VERSION,
    HEADER_SIZE,
    MAGIC,
    Frame,
    Kind,
    decode,
    encode_error,
    encode_prediction,
    encode_score,
    encode_train,
)
from shared.hashspec import MAX_BITS, Algorithm, SpecId

SLOW_EXAMPLES = max(settings.default.max_examples, 3000)
slow_settings = settings(max_examples=SLOW_EXAMPLES, deadline=None,
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# ------------------------------------------------------------------------------------ strategies
specs = st.builds(SpecId, st.sampled_from(list(Algorithm)), st.integers(1, MAX_BITS), st.booleans(),
                  st.binary(min_size=8, max_size=8))
finite32 = st.floats(allow_nan=False, allow_infinity=False, width=32)


@st.composite
def frame_inputs(draw) -> dict:
    """The arguments of one valid frame of any kind, with optional sections drawn at random."""
    spec = draw(specs)
    kind = draw(st.sampled_from(list(Kind)))
    n = draw(st.integers(0, 12))
    out: dict = {"kind": kind, "spec": spec, "n": n}
    if kind in (Kind.TRAIN, Kind.SCORE):
        lengths = draw(st.lists(st.integers(0, 6), min_size=n, max_size=n))
        offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.uint32)
        nnz = int(offsets[-1])
        out["offsets"] = offsets
        out["indices"] = np.array(draw(st.lists(st.integers(0, 2**spec.bits - 1), min_size=nnz, max_size=nnz)),
                                  np.uint32)
        out["values"] = (np.array(draw(st.lists(finite32, min_size=nnz, max_size=nnz)), np.float32)
                         if draw(st.booleans()) else None)
    if kind is Kind.TRAIN:
        out["labels"] = np.array(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)), np.uint8)
        out["weights"] = (np.array(draw(st.lists(st.floats(0, 2.0**100, width=32), min_size=n, max_size=n)),
                                   np.float32) if draw(st.booleans()) else None)
    else:
        out["request_ids"] = np.array(draw(st.lists(st.integers(0, 2**64 - 1), min_size=n, max_size=n)),
                                      np.uint64)
    if kind in (Kind.PREDICTION, Kind.ERROR):
        out["model_version"] = draw(st.integers(0, 2**64 - 1))
    if kind is Kind.PREDICTION:
        out["probabilities"] = np.array(draw(st.lists(st.floats(0, 1), min_size=n, max_size=n)), np.float64)
    if kind is Kind.ERROR:
        out["reason"] = draw(st.text(max_size=40))
    return out


def encode(x: dict) -> bytes:
    k = x["kind"]
    if k is Kind.TRAIN:
        return encode_train(x["spec"], x["labels"], x["offsets"], x["indices"], x["weights"], x["values"])
    if k is Kind.SCORE:
        return encode_score(x["spec"], x["request_ids"], x["offsets"], x["indices"], x["values"])
    if k is Kind.PREDICTION:
        return encode_prediction(x["spec"], x["request_ids"], x["probabilities"], x["model_version"])
    return encode_error(x["spec"], x["request_ids"], x["reason"], x["model_version"])


valid_frames = frame_inputs().map(encode)


@st.composite
def mutated_frames(draw) -> bytes:
    """A valid frame hit by one or more of: bit flips, truncation, splice, header field overwrite."""
    buf = bytearray(draw(valid_frames))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["flip", "truncate", "splice", "field", "extend", "delete"]))
        if op == "flip" and buf:
            i = draw(st.integers(0, len(buf) - 1))
            buf[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del buf[draw(st.integers(0, len(buf))):]
        elif op == "splice":
            other = draw(valid_frames)
            buf = buf[:draw(st.integers(0, len(buf)))] + other[draw(st.integers(0, len(other))):]
        elif op == "field" and len(buf) >= HEADER_SIZE:
            # overwrite one header field with a small or extreme value: counts, kind, flags, spec
            off, fmt = draw(st.sampled_from([(5, "<B"), (6, "<H"), (8, "<B"), (9, "<B"), (10, "<B"),
                                             (20, "<I"), (24, "<I"), (28, "<I")]))
            top = 2 ** (8 * struct.calcsize(fmt)) - 1
            struct.pack_into(fmt, buf, off, draw(st.one_of(st.integers(0, 40), st.just(top))))
        elif op == "extend":
            buf += draw(st.binary(max_size=16))
        elif op == "delete" and buf:
            i = draw(st.integers(0, len(buf) - 1))
            del buf[i:i + draw(st.integers(1, 8))]
    return bytes(buf)


# a header that passes the magic and version checks, followed by anything
header_then_junk = st.builds(lambda rest, body: MAGIC + bytes([FRAME_VERSION]) + rest + body,
                             st.binary(min_size=HEADER_SIZE - 5, max_size=HEADER_SIZE - 5), st.binary(max_size=200))


# ------------------------------------------------------------------------------------ invariants
def check_invariants(f: Frame, buf: bytes) -> None:
    """What every accepted frame guarantees to the trainer and scorer."""
    assert isinstance(f, Frame) and isinstance(f.kind, Kind)
    n, bits = f.n_records, f.spec.bits
    whole = np.frombuffer(buf, np.uint8)
    arrays = [a for a in (f.labels, f.weights, f.offsets, f.indices, f.values, f.request_ids, f.probabilities)
              if a is not None and a.size]
    for a in arrays:
        assert np.shares_memory(a, whole) and not a.flags.writeable
        assert (a.__array_interface__["data"][0] - whole.__array_interface__["data"][0]) % 8 == 0
    assert len(buf) % 8 == 0  # a valid frame is a whole number of 8-byte words
    if f.kind in (Kind.TRAIN, Kind.SCORE):
        assert f.offsets.shape == (n + 1,) and f.offsets.dtype == np.uint32
        assert int(f.offsets[0]) == 0 and int(f.offsets[-1]) == f.n_indices
        assert bool(np.all(np.diff(f.offsets.astype(np.int64)) >= 0))
        assert f.n_indices == 0 or int(f.indices.max()) < 2**bits
        if f.values is not None:
            assert f.values.shape == f.indices.shape and bool(np.isfinite(f.values).all())
    else:
        assert f.n_indices == 0 and f.values is None
    if f.kind is Kind.TRAIN:
        assert f.labels.shape == (n,) and set(f.labels.tolist()) <= {0, 1} and f.request_ids is None
        if f.weights is not None:
            assert f.weights.shape == (n,) and bool(np.isfinite(f.weights).all()) and not (f.weights < 0).any()
    else:
        assert f.request_ids.shape == (n,) and f.labels is None and f.weights is None
    if f.kind is Kind.PREDICTION:
        p = f.probabilities
        assert p.shape == (n,) and bool(np.isfinite(p).all()) and bool(((p >= 0) & (p <= 1)).all())


def reencode(f: Frame) -> bytes:
    """Encode an accepted frame again from its decoded fields."""
    x = {"kind": f.kind, "spec": f.spec, "labels": f.labels, "weights": f.weights, "offsets": f.offsets,
         "indices": f.indices, "values": f.values, "request_ids": f.request_ids,
         "probabilities": f.probabilities, "model_version": f.model_version, "reason": f.reason}
    return encode(x)


def decode_or_frame_error(buf: bytes) -> None:
    """The property: decode returns a frame satisfying the invariants, or raises FrameError."""
    try:
        f = decode(buf)
    except FrameError as e:
        assert e.reason and e.reason != "malformed", "every refusal names its check"
        event(f"refused: {e.reason}")
        return
    event(f"accepted: {f.kind.name.lower()}")
    check_invariants(f, buf)
    rebuf = reencode(f)
    again = decode(rebuf)
    check_invariants(again, rebuf)
    assert again.kind is f.kind and again.spec == f.spec and again.n_records == f.n_records
    for name in ("labels", "weights", "offsets", "indices", "values", "request_ids", "probabilities"):
        a, b = getattr(f, name), getattr(again, name)
        assert (a is None) == (b is None), name
        if a is not None:
            np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------------ properties
@given(frame_inputs())
def test_valid_frames_round_trip(x):
    buf = encode(x)
    f = decode(buf, expect=x["kind"])
    check_invariants(f, buf)
    assert f.spec == x["spec"] and f.n_records == x["n"]
    for name in ("labels", "weights", "offsets", "indices", "values", "request_ids", "probabilities"):
        want = x.get(name)
        got = getattr(f, name)
        if want is None:
            assert got is None or (name in ("offsets", "indices") and got.size == 0), name
        else:
            np.testing.assert_array_equal(got, want)
    if x["kind"] is Kind.ERROR:
        assert f.reason == x["reason"]
    if x["kind"] in (Kind.PREDICTION, Kind.ERROR):
        assert f.model_version == x["model_version"]
    assert reencode(f) == buf  # canonical: decode then encode gives the same bytes


@given(st.binary(max_size=300))
def test_random_bytes(buf):
    decode_or_frame_error(buf)


@given(header_then_junk)
def test_random_bytes_behind_a_plausible_header(buf):
    decode_or_frame_error(buf)


@given(mutated_frames())
def test_mutated_frames(buf):
    decode_or_frame_error(buf)


@pytest.mark.slow
@slow_settings
@given(frame_inputs())
def test_valid_frames_round_trip_long(x):
    buf = encode(x)
    f = decode(buf)
    check_invariants(f, buf)
    assert reencode(f) == buf


@pytest.mark.slow
@slow_settings
@given(st.one_of(st.binary(max_size=400), header_then_junk))
def test_random_bytes_long(buf):
    decode_or_frame_error(buf)


@pytest.mark.slow
@slow_settings
@given(mutated_frames())
def test_mutated_frames_long(buf):
    decode_or_frame_error(buf)
