"""Frame codec v1: round trips, the stored hex vectors, and one rejection reason per failure."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from shared.errors import FrameError, SpecMismatch
from shared.frames import (
    FLAG_VALUES,
    FLAG_WEIGHTS,
    HEADER,
    HEADER_SIZE,
    Kind,
    decode,
    encode_error,
    encode_prediction,
    encode_score,
    encode_train,
    require_spec,
)
from shared.hashspec import Algorithm, FeatureHasher, SpecId

FRAME_VECTORS = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "frames_v1.json")
                           .read_text(encoding="utf-8"))
KEY = bytes.fromhex(FRAME_VECTORS["key_hex"])
SPEC = FeatureHasher.keyed(KEY, 20).spec
SPEC_SIGNED = FeatureHasher.keyed(KEY, 24, signed=True).spec

LABELS = np.array([1, 0, 1, 1], np.uint8)
OFFSETS = np.array([0, 2, 2, 5, 6], np.uint32)
INDICES = np.array([3, 2**20 - 1, 0, 7, 7, 12345], np.uint32)
WEIGHTS = np.array([1.0, 0.5, 0.0, 3.25], np.float32)
VALUES = np.array([1.0, -1.0, -1.0, 1.0, 0.5, -2.0], np.float32)
RIDS = np.array([0, 1, 2**64 - 1, 0xDEADBEEF], np.uint64)


def _train(weights=None, values=None, spec=SPEC) -> bytes:
    return encode_train(spec, LABELS, OFFSETS, INDICES, weights=weights, values=values)


def _reason(buf, expect=None) -> str:
    with pytest.raises(FrameError) as info:
        decode(buf, expect)
    return info.value.reason


def _patched(buf: bytes, offset: int, fmt: str, value) -> bytes:
    b = bytearray(buf)
    struct.pack_into(fmt, b, offset, value)
    return bytes(b)


# --------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("weights", [None, WEIGHTS])
@pytest.mark.parametrize("values", [None, VALUES])
def test_train_round_trip(weights, values):
    f = decode(_train(weights, values), expect=Kind.TRAIN)
    assert f.kind is Kind.TRAIN and f.spec == SPEC and f.n_records == 4 and f.n_indices == 6
    np.testing.assert_array_equal(f.labels, LABELS)
    np.testing.assert_array_equal(f.offsets, OFFSETS)
    np.testing.assert_array_equal(f.indices, INDICES)
    assert f.request_ids is None and f.probabilities is None
    if weights is None:
        assert f.weights is None
    else:
        np.testing.assert_array_equal(f.weights, WEIGHTS)
    if values is None:
        assert f.values is None
    else:
        np.testing.assert_array_equal(f.values, VALUES)
    assert f.offsets.dtype == np.uint32 and f.indices.dtype == np.uint32 and f.labels.dtype == np.uint8


@pytest.mark.parametrize("values", [None, VALUES])
def test_score_round_trip(values):
    f = decode(encode_score(SPEC_SIGNED, RIDS, OFFSETS, INDICES, values=values), expect=Kind.SCORE)
    assert f.kind is Kind.SCORE and f.spec == SPEC_SIGNED and f.n_records == 4
    np.testing.assert_array_equal(f.request_ids, RIDS)
    assert f.request_ids.dtype == np.uint64
    np.testing.assert_array_equal(f.offsets, OFFSETS)
    np.testing.assert_array_equal(f.indices, INDICES)
    assert f.labels is None and f.weights is None
    assert (f.values is None) == (values is None)
    if values is not None:
        np.testing.assert_array_equal(f.values, VALUES)


def test_prediction_round_trip():
    probs = np.array([0.0, 0.25, 1.0, 0.999], np.float64)
    f = decode(encode_prediction(SPEC, RIDS, probs, model_version=2**40 + 3), expect=Kind.PREDICTION)
    assert f.kind is Kind.PREDICTION and f.n_records == 4 and f.model_version == 2**40 + 3
    np.testing.assert_array_equal(f.request_ids, RIDS)
    np.testing.assert_array_equal(f.probabilities, probs)
    assert f.n_indices == 0 and f.labels is None


def test_error_round_trip_with_non_ascii_reason():
    f = decode(encode_error(SPEC, RIDS[:2], "spec_mismatch: clé ≠ modèle", model_version=5), expect=Kind.ERROR)
    assert f.kind is Kind.ERROR and f.reason == "spec_mismatch: clé ≠ modèle" and f.model_version == 5
    np.testing.assert_array_equal(f.request_ids, RIDS[:2])


def test_values_of_signed_hashing_travel_as_signs():
    h = FeatureHasher.keyed(KEY, 24, signed=True)
    pairs = [("age", "39"), ("city", "Zürich"), ("note", ""), ("emoji", "😀")]
    idx, sgn = zip(*(h.index_sign(f, v) for f, v in pairs))
    buf = encode_train(h.spec, np.array([1], np.uint8), np.array([0, 4]), np.array(idx), values=np.array(sgn))
    f = decode(buf)
    assert f.indices.tolist() == list(idx) and f.values.tolist() == [float(s) for s in sgn]


# --------------------------------------------------------------------------------- zero records
@pytest.mark.parametrize("make", [
    lambda: encode_train(SPEC, np.zeros(0, np.uint8), np.zeros(1, np.uint32), np.zeros(0, np.uint32)),
    lambda: encode_train(SPEC, np.zeros(0, np.uint8), np.zeros(1, np.uint32), np.zeros(0, np.uint32),
                         weights=np.zeros(0, np.float32), values=np.zeros(0, np.float32)),
    lambda: encode_score(SPEC, np.zeros(0, np.uint64), np.zeros(1, np.uint32), np.zeros(0, np.uint32)),
    lambda: encode_prediction(SPEC, np.zeros(0, np.uint64), np.zeros(0), 1),
    lambda: encode_error(SPEC, np.zeros(0, np.uint64), ""),
], ids=["train", "train_wv", "score", "prediction", "error"])
def test_zero_record_frames(make):
    buf = make()
    f = decode(buf)
    assert f.n_records == 0 and f.n_indices == 0
    assert len(buf) % 8 == 0
    if f.kind in (Kind.TRAIN, Kind.SCORE):
        assert f.offsets.tolist() == [0]
        assert len(buf) == HEADER_SIZE + 8  # one offset, padded


def test_records_without_indices():
    buf = encode_train(SPEC, np.array([0, 1], np.uint8), np.zeros(3, np.uint32), np.zeros(0, np.uint32))
    f = decode(buf)
    assert f.n_records == 2 and f.n_indices == 0 and f.offsets.tolist() == [0, 0, 0]


def test_zero_record_frame_with_stray_indices_is_refused():
    # n = 0 but nnz = 2 and offsets = [2]: indices that belong to no record (the old decoder took it)
    hdr = bytearray(encode_train(SPEC, np.zeros(0, np.uint8), np.zeros(1), np.zeros(0))[:HEADER_SIZE])
    struct.pack_into("<I", hdr, 24, 2)
    buf = bytes(hdr) + struct.pack("<II", 2, 0) + struct.pack("<II", 1, 2)
    assert _reason(buf) == "offsets_start"


# --------------------------------------------------------------------------------- vectors
@pytest.mark.parametrize("vector", FRAME_VECTORS["valid"], ids=lambda v: v["name"])
def test_valid_frame_vectors(vector):
    buf = bytes.fromhex(vector["hex"])
    f = decode(buf)
    assert f.kind.name.lower() == vector["kind"]
    s = vector["spec"]
    assert f.spec == SpecId(Algorithm(s["algorithm"]), s["bits"], s["signed"], bytes.fromhex(s["key_id_hex"]),
                            s["version"])
    for name, want in vector["fields"].items():
        got = getattr(f, name)
        assert (got.tolist() if isinstance(got, np.ndarray) else got) == want, name
    # and the encoder produces exactly these bytes from the listed fields
    fl = vector["fields"]
    if f.kind is Kind.TRAIN:
        w, v = fl.get("weights"), fl.get("values")
        again = encode_train(f.spec, np.array(fl["labels"]), np.array(fl["offsets"]), np.array(fl["indices"]),
                             weights=None if w is None else np.array(w), values=None if v is None else np.array(v))
    elif f.kind is Kind.SCORE:
        v = fl.get("values")
        again = encode_score(f.spec, np.array(fl["request_ids"], np.uint64), np.array(fl["offsets"]),
                             np.array(fl["indices"]), values=None if v is None else np.array(v))
    elif f.kind is Kind.PREDICTION:
        again = encode_prediction(f.spec, np.array(fl["request_ids"], np.uint64), np.array(fl["probabilities"]),
                                  fl["model_version"])
    else:
        again = encode_error(f.spec, np.array(fl["request_ids"], np.uint64), fl["reason"], fl["model_version"])
    assert again == buf


@pytest.mark.parametrize("vector", FRAME_VECTORS["invalid"], ids=lambda v: v["name"])
def test_invalid_frame_vectors(vector):
    assert _reason(bytes.fromhex(vector["hex"])) == vector["reason"]


def test_vectors_cover_every_kind():
    assert {v["kind"] for v in FRAME_VECTORS["valid"]} == {"train", "score", "prediction", "error"}


# --------------------------------------------------------------------------------- rejections
def test_header_layout_is_40_bytes():
    assert HEADER.size == HEADER_SIZE == 40
    buf = _train(WEIGHTS, VALUES)
    assert buf[:4] == b"HBFR" and buf[4] == 1 and buf[5] == Kind.TRAIN
    assert struct.unpack_from("<H", buf, 6)[0] == FLAG_WEIGHTS | FLAG_VALUES
    assert buf[8:12] == bytes([1, 20, 0, 1]) and buf[12:20] == SPEC.key_id
    assert struct.unpack_from("<IIIQ", buf, 20) == (4, 6, 0, 0)


@pytest.mark.parametrize("cut", [0, 1, 39, 40, 41, 47, 50, 63])
def test_truncated(cut):
    assert _reason(_train()[:cut]) == "truncated"


def test_every_truncation_is_refused():
    buf = _train(WEIGHTS, VALUES)
    for cut in range(len(buf)):
        # a cut inside the last section's zero padding leaves every array whole: length_mismatch
        assert _reason(buf[:cut]) in {"truncated", "length_mismatch"}, cut


def test_trailing_bytes():
    assert _reason(_train() + bytes(8)) == "length_mismatch"
    assert _reason(_train() + b"\0") == "length_mismatch"


def test_bad_magic():
    assert _reason(b"XBFR" + _train()[4:]) == "bad_magic"


def test_bad_version_kind_flags_spec():
    buf = _train()
    assert _reason(_patched(buf, 4, "<B", 0)) == "bad_version"
    assert _reason(_patched(buf, 5, "<B", 0)) == "bad_kind"
    assert _reason(_patched(buf, 5, "<B", 5)) == "bad_kind"
    assert _reason(_patched(buf, 6, "<H", 0x100)) == "bad_flags"
    assert _reason(_patched(buf, 8, "<B", 0)) == "bad_spec"
    assert _reason(_patched(buf, 9, "<B", 0)) == "bad_spec"
    assert _reason(_patched(buf, 10, "<B", 2)) == "bad_spec"
    assert _reason(_patched(buf, 11, "<B", 0)) == "bad_spec"


def test_flags_that_do_not_fit_the_kind():
    score = encode_score(SPEC, RIDS, OFFSETS, INDICES)
    assert _reason(_patched(score, 6, "<H", FLAG_WEIGHTS)) == "bad_flags"
    pred = encode_prediction(SPEC, RIDS, np.full(4, 0.5), 1)
    assert _reason(_patched(pred, 6, "<H", FLAG_VALUES)) == "bad_flags"


def test_wrong_kind():
    assert _reason(_train(), expect=Kind.SCORE) == "wrong_kind"
    assert decode(_train(), expect=Kind.TRAIN).kind is Kind.TRAIN


def test_counts_that_do_not_match():
    buf = _train()
    # header says 7 indices: the arrays no longer line up with the buffer
    assert _reason(_patched(buf, 24, "<I", 7)) in {"truncated", "length_mismatch"}
    assert _reason(_patched(buf, 24, "<I", 100)) == "truncated"
    # header says 5 records: one more offset fits in the padding, so the last offset is not nnz
    # (labels 5 bytes and offsets 6 u32 = 24 bytes: same padded sizes as 4 records)
    assert _reason(_patched(buf, 20, "<I", 5)) == "count_mismatch"
    # last offset moved: it no longer equals the header's index count
    assert _reason(_patched(buf, HEADER_SIZE + 8 + 16, "<I", 5)) == "count_mismatch"
    pred = encode_prediction(SPEC, RIDS, np.full(4, 0.5), 1)
    assert _reason(_patched(pred, 24, "<I", 1)) == "count_mismatch"


def test_offsets_start_and_backwards():
    buf = _train()
    off = HEADER_SIZE + 8  # labels u8[4] padded to 8
    assert _reason(_patched(buf, off, "<I", 1)) == "offsets_start"
    assert _reason(_patched(buf, off + 8, "<I", 1)) == "offsets_backwards"  # [0, 2, 1, 5, 6]
    assert _reason(_patched(buf, off + 4, "<I", 6)) == "offsets_backwards"  # [0, 6, 2, 5, 6]


@pytest.mark.parametrize("bits", [1, 20, 31])
def test_index_at_or_above_2_to_the_bits(bits):
    spec = FeatureHasher.keyed(KEY, bits).spec
    ok = encode_train(spec, np.array([1], np.uint8), np.array([0, 1]), np.array([2**bits - 1]))
    assert decode(ok).indices.tolist() == [2**bits - 1]
    bad = encode_train(spec, np.array([1], np.uint8), np.array([0, 1]), np.array([2**bits]))
    assert _reason(bad) == "index_out_of_range"
    worst = encode_train(spec, np.array([1], np.uint8), np.array([0, 1]), np.array([2**32 - 1]))
    assert _reason(worst) == "index_out_of_range"


@pytest.mark.parametrize("label", [2, 255])
def test_label_other_than_0_or_1(label):
    assert _reason(_patched(_train(), HEADER_SIZE + 2, "<B", label)) == "bad_label"


@pytest.mark.parametrize("weight", [-1.0, float("nan"), float("inf")])
def test_bad_weight(weight):
    w = WEIGHTS.copy()
    w[1] = weight
    assert _reason(_train(weights=w)) == "bad_weight"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_bad_value(value):
    v = VALUES.copy()
    v[3] = value
    assert _reason(_train(values=v)) == "bad_value"
    assert _reason(encode_score(SPEC, RIDS, OFFSETS, INDICES, values=v)) == "bad_value"


@pytest.mark.parametrize("p", [-0.5, 1.5, float("nan"), float("inf")])
def test_bad_probability(p):
    assert _reason(encode_prediction(SPEC, RIDS, np.array([0.5, p, 0.5, 0.5]), 1)) == "bad_probability"


def test_error_frame_reason_length_beyond_buffer():
    buf = encode_error(SPEC, RIDS[:1], "abc")
    assert _reason(_patched(buf, 28, "<I", 9)) == "truncated"
    assert _reason(_patched(buf, 28, "<I", 0)) == "length_mismatch"  # 8 bytes of reason left over


def test_frame_error_is_the_only_error_for_garbage():
    for junk in (b"", b"HBFR", bytes(40), bytes(range(256)), b"HBFR" + bytes(100)):
        with pytest.raises(FrameError):
            decode(junk)


def test_require_spec_refuses_another_key_space():
    f = decode(_train())
    require_spec(f, SPEC)
    other = FeatureHasher.keyed(bytes(range(1, 33)), 20).spec
    with pytest.raises(SpecMismatch) as info:
        require_spec(f, other)
    assert info.value.reason == "spec_mismatch"
    with pytest.raises(SpecMismatch):
        require_spec(f, FeatureHasher.keyed(KEY, 21).spec)


# --------------------------------------------------------------------------------- encoder checks
def test_encoder_refuses_inconsistent_arrays():
    with pytest.raises(ValueError):
        encode_train(SPEC, LABELS, OFFSETS[:-1], INDICES)
    with pytest.raises(ValueError):
        encode_train(SPEC, LABELS, OFFSETS, INDICES[:-1])
    with pytest.raises(ValueError):
        encode_train(SPEC, LABELS, OFFSETS + 1, np.zeros(7, np.uint32))  # offsets not starting at 0
    with pytest.raises(ValueError):
        encode_train(SPEC, LABELS, OFFSETS, INDICES, weights=WEIGHTS[:3])
    with pytest.raises(ValueError):
        encode_score(SPEC, RIDS, OFFSETS, INDICES, values=VALUES[:2])
    with pytest.raises(ValueError):
        encode_prediction(SPEC, RIDS, np.zeros(3), 1)


# --------------------------------------------------------------------------------- zero copy
def _byte_offset(arr: np.ndarray, buf) -> int:
    base = np.frombuffer(buf, np.uint8)
    return arr.__array_interface__["data"][0] - base.__array_interface__["data"][0]


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview], ids=["bytes", "bytearray", "memoryview"])
def test_arrays_are_aligned_read_only_views_of_the_buffer(wrap):
    raw = _train(WEIGHTS, VALUES)
    buf = wrap(raw)
    f = decode(buf)
    whole = np.frombuffer(buf, np.uint8)
    for name in ("labels", "weights", "offsets", "indices", "values"):
        arr = getattr(f, name)
        assert np.shares_memory(arr, whole), name
        assert _byte_offset(arr, buf) % 8 == 0, name  # every section starts on an 8-byte boundary
        assert not arr.flags.writeable, name
    if wrap is bytes:  # CPython's bytes payload is itself 8-byte aligned, so the arrays are too
        for name in ("labels", "weights", "offsets", "indices", "values"):
            assert getattr(f, name).ctypes.data % 8 == 0, name
            assert getattr(f, name).flags.aligned, name


def test_score_and_prediction_arrays_are_views():
    buf = encode_score(SPEC, RIDS, OFFSETS, INDICES)
    f = decode(buf)
    assert np.shares_memory(f.request_ids, np.frombuffer(buf, np.uint8))
    assert _byte_offset(f.request_ids, buf) == HEADER_SIZE
    pbuf = encode_prediction(SPEC, RIDS, np.full(4, 0.5), 1)
    p = decode(pbuf)
    assert np.shares_memory(p.probabilities, np.frombuffer(pbuf, np.uint8))
    assert _byte_offset(p.probabilities, pbuf) == HEADER_SIZE + 32


def test_writes_to_a_bytearray_buffer_show_through():
    """The decoded arrays are views, not copies: a change to the buffer is visible in them."""
    buf = bytearray(_train())
    f = decode(buf)
    off = _byte_offset(f.indices, buf)
    struct.pack_into("<I", buf, off, 42)
    assert int(f.indices[0]) == 42
