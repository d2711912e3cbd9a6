"""Scorer kernel against plain numpy, and the reply for every kind of request."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from scorer.kernels import predict_csr
from scorer.scoring import NO_MODEL, predict_numpy, serve
from shared.frames import Kind, decode, encode_score
from shared.hashspec import Algorithm, SpecId, key_id
from shared.models import ModelSnapshot

SPEC = SpecId(Algorithm.BLAKE2B_KEYED, 12, False, key_id(b"s" * 16))
FOREIGN = SpecId(Algorithm.BLAKE2B_KEYED, 12, False, key_id(b"x" * 16))


def model(version: int = 3, scale: float = 1.0) -> ModelSnapshot:
    w = (scale * np.random.default_rng(version).normal(size=1 << SPEC.bits)).astype(np.float32)
    return ModelSnapshot(version, SPEC, w, 0.3, 10, 0.0)


def naive(weights: np.ndarray, bias: float, offsets: np.ndarray, indices: np.ndarray,
          values: np.ndarray | None) -> np.ndarray:
    out = []
    for r in range(len(offsets) - 1):
        sl = slice(offsets[r], offsets[r + 1])
        contrib = weights[indices[sl]].astype(np.float64)
        if values is not None:
            contrib = contrib * values[sl]
        out.append(1.0 / (1.0 + np.exp(-(bias + contrib.sum()))))
    return np.array(out)


def random_rows(rng: np.random.Generator, n: int, max_len: int = 20) -> tuple[np.ndarray, np.ndarray]:
    lengths = rng.integers(0, max_len, n)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.uint32)
    return offsets, rng.integers(0, 1 << SPEC.bits, int(offsets[-1])).astype(np.uint32)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 50), seed=st.integers(0, 2**32 - 1), with_values=st.booleans(),
       scale=st.sampled_from([0.1, 1.0, 50.0]))
def test_kernel_matches_naive(n: int, seed: int, with_values: bool, scale: float) -> None:
    rng = np.random.default_rng(seed)
    m = model(scale=scale)
    offsets, indices = random_rows(rng, n)
    values = rng.choice([-1.0, 1.0, 0.5], len(indices)).astype(np.float32) if with_values else None
    out = np.empty(n)
    predict_csr(m.weights, m.bias, offsets, indices,
                values if values is not None else np.zeros(0, np.float32), out)
    ref = naive(m.weights, m.bias, offsets, indices, values)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-9)
    np.testing.assert_allclose(predict_numpy(m, offsets, indices, values), ref, rtol=0, atol=1e-9)


def test_serve_prediction() -> None:
    rng = np.random.default_rng(1)
    offsets, indices = random_rows(rng, 30)
    ids = np.arange(100, 130, dtype=np.uint64)
    reply = serve(encode_score(SPEC, ids, offsets, indices), model())
    frame = decode(reply.value, expect=Kind.PREDICTION)
    assert reply.ok and frame.model_version == 3 and frame.spec == SPEC
    np.testing.assert_array_equal(frame.request_ids, ids)
    np.testing.assert_allclose(frame.probabilities, naive(model().weights, 0.3, offsets, indices, None),
                               atol=1e-9)


def test_foreign_key_gets_error_reply() -> None:
    offsets, indices = random_rows(np.random.default_rng(2), 4)
    ids = np.arange(4, dtype=np.uint64)
    reply = serve(encode_score(FOREIGN, ids, offsets, indices), model())
    frame = decode(reply.value, expect=Kind.ERROR)
    assert reply.reason == "spec_mismatch" == frame.reason
    np.testing.assert_array_equal(frame.request_ids, ids)
    assert frame.spec == FOREIGN  # the owner's client can match the reply to its own spec


def test_no_model_gets_error_reply() -> None:
    offsets, indices = random_rows(np.random.default_rng(3), 2)
    reply = serve(encode_score(SPEC, np.arange(2, dtype=np.uint64), offsets, indices), None)
    assert reply.reason == NO_MODEL and decode(reply.value).n_records == 2


@pytest.mark.parametrize("garbage", [b"", b"nonsense", b"HBFR" + b"\0" * 60])
def test_undecodable_gets_error_reply_with_no_ids(garbage: bytes) -> None:
    reply = serve(garbage, model())
    frame = decode(reply.value, expect=Kind.ERROR)
    assert not reply.ok and frame.n_records == 0 and frame.reason == reply.reason


def test_train_frame_on_score_topic_is_refused() -> None:
    from shared.frames import encode_train
    buf = encode_train(SPEC, np.array([1], np.uint8), np.array([0, 1], np.uint32), np.array([5], np.uint32))
    assert serve(buf, model()).reason == "wrong_kind"


def test_prediction_frame_matches_the_reference_encoder() -> None:
    from scorer.scoring import predict, prediction_frame
    from shared.frames import encode_prediction

    rng = np.random.default_rng(5)
    for n in (0, 1, 7, 300):
        offsets, indices = random_rows(rng, n)
        frame = decode(encode_score(SPEC, rng.integers(0, 2**63, n).astype(np.uint64), offsets, indices),
                       expect=Kind.SCORE)
        m = model(4)
        assert prediction_frame(m, frame) == encode_prediction(SPEC, frame.request_ids, predict(m, frame), 4)


def _small_requests(rng: np.random.Generator, count: int) -> list[bytes | None]:
    """Valid, foreign, corrupted, truncated and empty requests, mixed."""
    from shared.frames import FLAG_VALUES

    out: list[bytes | None] = []
    for _ in range(count):
        n = int(rng.integers(0, 4))
        offsets, indices = random_rows(rng, n, max_len=6)
        ids = rng.integers(0, 2**63, n).astype(np.uint64)
        vals = rng.choice([-1.0, 1.0, 0.5], indices.shape[0]).astype(np.float32) if rng.random() < 0.3 else None
        spec = FOREIGN if rng.random() < 0.1 else SPEC
        buf = bytearray(encode_score(spec, ids, offsets, indices, vals))
        kind = rng.random()
        if kind < 0.25:  # flip a byte anywhere: header fields, offsets, indices, values
            buf[int(rng.integers(0, len(buf)))] ^= 1 << int(rng.integers(0, 8))
        elif kind < 0.3:
            buf = buf[:int(rng.integers(0, len(buf)))]
        elif kind < 0.33 and vals is not None and len(vals):
            pos = len(buf) - 4 * int(((len(vals) + 1) // 2) * 2)  # first value: make it NaN
            buf[pos:pos + 4] = np.array([np.nan], np.float32).tobytes()
        elif kind < 0.35:
            buf[6] |= FLAG_VALUES  # flag set but no values section
        out.append(None if kind > 0.99 else bytes(buf))
    return out


@given(st.integers(0, 2**32 - 1))
@settings(max_examples=60, deadline=None)
def test_serve_many_matches_serve_byte_for_byte(seed: int) -> None:
    from scorer.scoring import serve_many

    rng = np.random.default_rng(seed)
    m = model(5)
    requests = _small_requests(rng, int(rng.integers(0, 40)))
    got = serve_many(requests, m)
    want = [serve(v, m) for v in requests]
    assert [(r.value, r.n_records, r.model_version, r.reason) for r in got] == \
        [(r.value, r.n_records, r.model_version, r.reason) for r in want]


def test_serve_many_takes_the_fast_path_for_valid_frames() -> None:
    from scorer import scoring

    rng = np.random.default_rng(3)
    m = model(6)
    requests = []
    for i in range(50):
        offsets, indices = random_rows(rng, 1)
        requests.append(encode_score(SPEC, np.array([i], np.uint64), offsets, indices))
    calls = []
    real = scoring.serve
    scoring.serve = lambda v, mod: calls.append(v) or real(v, mod)  # type: ignore[assignment]
    try:
        got = scoring.serve_many(requests, m)
    finally:
        scoring.serve = real
    assert calls == [] and all(r.ok for r in got)
    assert [r.value for r in got] == [real(v, m).value for v in requests]


def test_serve_many_on_a_pool_gives_serve_s_replies_in_order() -> None:
    """Large frames (bulk scoring) are scored on a thread pool: same bytes, same order as ``serve``,
    the broken and foreign ones included, and the pool's threads really ran the kernel."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from scorer import scoring

    rng = np.random.default_rng(11)
    m = model(7)
    requests: list[bytes | None] = []
    for f in range(12):
        offsets, indices = random_rows(rng, 3000)  # ~30 KiB of indices: above SMALL_FRAME_BYTES
        spec = FOREIGN if f == 4 else SPEC
        buf = bytearray(encode_score(spec, rng.integers(0, 2**63, 3000).astype(np.uint64), offsets, indices))
        if f == 7:
            buf[3] ^= 0xFF  # bad magic
        requests.append(bytes(buf))
    requests.append(None)
    assert all(len(r) > scoring.SMALL_FRAME_BYTES for r in requests if r is not None)
    threads: set[str] = set()
    real = scoring.serve

    def spy(v: bytes | None, mod: ModelSnapshot | None) -> scoring.Reply:
        threads.add(threading.current_thread().name)
        return real(v, mod)

    scoring.serve = spy  # type: ignore[assignment]
    try:
        with ThreadPoolExecutor(2, thread_name_prefix="score") as pool:
            got = scoring.serve_many(requests, m, pool)
    finally:
        scoring.serve = real
    want = [real(v, m) for v in requests]
    assert [(r.value, r.n_records, r.reason) for r in got] == [(r.value, r.n_records, r.reason) for r in want]
    assert [r.ok for r in got].count(False) == 3
    assert threads and all(t.startswith("score") for t in threads)


def test_serve_many_serves_small_and_large_frames_together_in_order() -> None:
    """A batch mixing single-record requests and bulk frames: the small ones in one kernel call,
    the large ones (and any small one the kernel refuses) on the pool, replies in request order."""
    from concurrent.futures import ThreadPoolExecutor

    from scorer.scoring import serve_many

    rng = np.random.default_rng(12)
    m = model(8)
    requests = _small_requests(rng, 30)
    for pos in (3, 17, 29):
        offsets, indices = random_rows(rng, 3000)
        requests.insert(pos, encode_score(SPEC, rng.integers(0, 2**63, 3000).astype(np.uint64), offsets, indices))
    with ThreadPoolExecutor(2) as pool:
        got = serve_many(requests, m, pool)
    want = [serve(v, m) for v in requests]
    assert [(r.value, r.n_records, r.reason) for r in got] == [(r.value, r.n_records, r.reason) for r in want]
