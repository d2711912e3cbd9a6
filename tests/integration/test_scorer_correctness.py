"""Scorer on a real broker, in-process: exact probabilities, error replies and dead letters."""
from __future__ import annotations

import time
import uuid

import numpy as np
import pytest
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from scorer.metrics import ScorerMetrics
from scorer.scoring import predict_numpy
from scorer.service import ScorerService
from scorer.settings import ScorerSettings
from shared.clients import ensure_pipeline_topics, make_consumer, make_producer
from shared.deadletter import REASON, headers_dict
from shared.frames import Kind, decode, encode_score
from shared.hashspec import Algorithm, SpecId, key_id
from shared.models import ModelPublisher, ModelSnapshot
from shared.settings import KafkaSettings, Topics

SPEC = SpecId(Algorithm.BLAKE2B_KEYED, 16, True, key_id(b"c" * 16))
FOREIGN = SpecId(Algorithm.BLAKE2B_KEYED, 16, True, key_id(b"f" * 16))


@pytest.fixture
def kafka(kafka_bootstrap: str) -> KafkaSettings:
    k = KafkaSettings(bootstrap=kafka_bootstrap, topics=Topics(prefix=f"t{uuid.uuid4().hex[:12]}."))
    ensure_pipeline_topics(k, partitions=4)
    return k


def read_all(kafka: KafkaSettings, topic: str, expect: int, deadline_s: float = 60.0) -> list:
    """Every message of ``topic`` from the start, once ``expect`` of them arrived."""
    c = make_consumer(kafka, f"check-{uuid.uuid4().hex}")
    parts = c.list_topics(topic, timeout=10).topics[topic].partitions
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    out: list = []
    deadline = time.monotonic() + deadline_s
    try:
        while len(out) < expect and time.monotonic() < deadline:
            out += [m for m in c.consume(1000, 0.5) if m.error() is None]
    finally:
        c.close()
    assert len(out) >= expect, f"only {len(out)} of {expect} messages on {topic}"
    return out


def test_probabilities_match_numpy_and_bad_frames_get_error_replies(kafka: KafkaSettings) -> None:
    rng = np.random.default_rng(5)
    weights = rng.normal(scale=0.5, size=1 << SPEC.bits).astype(np.float32)
    model = ModelSnapshot(1, SPEC, weights, -0.7, 1000, time.time())
    pub = ModelPublisher(kafka)
    pub.publish(model)
    pub.close()

    producer = make_producer(kafka)
    expected: dict[int, float] = {}
    next_id = 0
    for f in range(120):
        n = int(rng.integers(1, 400)) if f % 10 else 4000  # every tenth a bulk frame (> 64 KiB: serve threads)
        lengths = rng.integers(0, 30, n)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.uint32)
        indices = rng.integers(0, 1 << SPEC.bits, int(offsets[-1])).astype(np.uint32)
        values = rng.choice([-1.0, 1.0], len(indices)).astype(np.float32) if f % 2 else None
        ids = np.arange(next_id, next_id + n, dtype=np.uint64) * 7919  # opaque, not positions
        next_id += n
        expected.update(zip(ids.tolist(), predict_numpy(model, offsets, indices, values).tolist()))
        producer.produce(kafka.topics.score, key=b"req-%d" % f, value=encode_score(SPEC, ids, offsets, indices, values))
    foreign_ids = np.array([11, 12, 13], np.uint64)
    producer.produce(kafka.topics.score, key=b"foreign", value=encode_score(
        FOREIGN, foreign_ids, np.array([0, 1, 2, 3], np.uint32), np.array([1, 2, 3], np.uint32)))
    producer.produce(kafka.topics.score, key=b"garbage", value=b"\x00not a frame, but long enough to carry a full forty byte header")
    assert producer.flush(30) == 0

    settings = ScorerSettings(kafka=kafka, group=f"g{uuid.uuid4().hex}", model_wait=20.0, mode="throughput",
                              serve_threads=2)  # the bulk frames go through the thread pool
    with ScorerService(settings, ScorerMetrics()) as svc:
        served = svc.run(max_records=len(expected) + 3, timeout=90)
        assert served == len(expected) + 3
        # a stopped scorer has flushed its replies and committed exactly up to what it answered
        committed = svc._consumer.committed(
            [TopicPartition(kafka.topics.score, p) for p in range(4)], timeout=10)
        ends = [svc._consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in committed]
        assert [tp.offset for tp in committed] == ends
        assert svc.metrics.rejected.labels("spec_mismatch")._value.get() == 3

    replies = read_all(kafka, kafka.topics.predictions, 122)
    got: dict[int, float] = {}
    errors = {}
    for msg in replies:
        frame = decode(msg.value())
        if frame.kind is Kind.PREDICTION:
            assert frame.model_version == 1 and frame.spec == SPEC
            got.update(zip(frame.request_ids.tolist(), frame.probabilities.tolist()))
        else:
            errors[msg.key()] = frame
    assert got.keys() == expected.keys()
    ids = list(expected)
    np.testing.assert_allclose([got[i] for i in ids], [expected[i] for i in ids], rtol=0, atol=1e-6)
    assert errors[b"foreign"].reason == "spec_mismatch"
    assert errors[b"foreign"].request_ids.tolist() == [11, 12, 13]
    assert errors[b"garbage"].n_records == 0 and errors[b"garbage"].reason == "bad_magic"

    dead = read_all(kafka, kafka.topics.dlq, 2)
    reasons = {m.key(): headers_dict(m.headers())[REASON] for m in dead}
    assert reasons == {b"foreign": "spec_mismatch", b"garbage": "bad_magic"}


def test_adult_test_through_the_scorer_equals_the_model_applied_directly(kafka: KafkaSettings, tmp_path) -> None:
    """adult.test, hashed by the producer's columnar path with a real key, sent as score frames,
    scored by the scorer service through the broker: every probability equals the same model
    applied with numpy to the same frames (1e-6), and the reply names the model version."""
    import shutil
    from pathlib import Path

    from producer.edges import fit_edges
    from producer.hashing import make_hasher
    from producer.schema import load_schema
    from producer.sources import CsvSource
    from shared.datasets import adult_dir

    root = Path(__file__).resolve().parents[2]
    shutil.copy(root / "examples" / "adult.schema.toml", tmp_path)
    fit_edges(load_schema(tmp_path / "adult.schema.toml"), str(adult_dir() / "adult.data"))
    schema = load_schema(tmp_path / "adult.schema.toml")
    hasher = make_hasher(schema, bytes(range(7, 39)))
    source = CsvSource(adult_dir() / "adult.test", schema, schema.input_columns)
    encoded = [hasher.batch(c.batch) for c in source]
    spec = hasher.spec
    model = ModelSnapshot(4, spec, np.random.default_rng(4).normal(scale=0.3, size=1 << spec.bits).astype(np.float32),
                          -0.7, 0, time.time())
    pub = ModelPublisher(kafka)
    pub.publish(model)
    pub.close()

    producer = make_producer(kafka)
    expected: dict[int, float] = {}
    first = frames = 0
    for enc in encoded:
        for start in range(0, enc.n, 1000):
            stop = min(start + 1000, enc.n)
            offsets, indices, values = enc.rows(start, stop)
            ids = (np.arange(first, first + stop - start, dtype=np.uint64) * 104729) + 17  # opaque
            first += stop - start
            expected.update(zip(ids.tolist(), predict_numpy(model, offsets, indices, values).tolist()))
            producer.produce(kafka.topics.score, key=b"%d" % first, value=encode_score(spec, ids, offsets, indices, values))
            frames += 1
    assert producer.flush(30) == 0
    assert len(expected) == 16281  # every test record (the file's first line is not a record)

    settings = ScorerSettings(kafka=kafka, group=f"g{uuid.uuid4().hex}", model_wait=20.0)
    with ScorerService(settings, ScorerMetrics()) as svc:
        assert svc.run(max_records=len(expected), timeout=90) == len(expected)
    got: dict[int, float] = {}
    for msg in read_all(kafka, kafka.topics.predictions, frames):
        frame = decode(msg.value())
        assert frame.kind is Kind.PREDICTION and frame.model_version == 4 and frame.spec == spec
        got.update(zip(frame.request_ids.tolist(), frame.probabilities.tolist()))
    assert got.keys() == expected.keys()
    ids = list(expected)
    np.testing.assert_allclose([got[i] for i in ids], [expected[i] for i in ids], rtol=0, atol=1e-6)
