"""Two scorer processes share the partitions; one is SIGKILLed mid-way and every request is
still answered (at-least-once: duplicates are counted and reported, never silent)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
from confluent_kafka.admin import AdminClient

from shared.clients import ensure_pipeline_topics, make_consumer, make_producer
from shared.frames import Kind, decode, encode_score
from shared.hashspec import Algorithm, SpecId, key_id
from shared.models import ModelPublisher, ModelSnapshot
from shared.settings import KafkaSettings, Topics

SPEC = SpecId(Algorithm.BLAKE2B_KEYED, 14, False, key_id(b"q" * 16))
N_FRAMES, PER_FRAME, PER_ROW = 3000, 10, 6


def start_scorer(kafka: KafkaSettings, group: str, log_path: Path) -> subprocess.Popen:
    env = {**os.environ, "HASHBRIDGE_BOOTSTRAP": kafka.bootstrap}
    return subprocess.Popen(
        [sys.executable, "-m", "scorer", "--prefix", kafka.topics.prefix, "--group", group,
         "--mode", "latency", "--model-wait", "60", "--session-timeout-ms", "6000"],
        env=env, stdout=log_path.open("w"), stderr=subprocess.STDOUT)


def group_members(admin: AdminClient, group: str) -> int:
    try:
        desc = admin.describe_consumer_groups([group], request_timeout=5)[group].result()
        return sum(1 for m in desc.members if m.assignment and m.assignment.topic_partitions)
    except Exception:  # noqa: BLE001 - the group does not exist until the first member joins
        return 0


def test_sigkill_one_of_two_scorers_answers_every_request(kafka_bootstrap: str, tmp_path: Path) -> None:
    kafka = KafkaSettings(bootstrap=kafka_bootstrap, topics=Topics(prefix=f"t{uuid.uuid4().hex[:12]}."))
    ensure_pipeline_topics(kafka, partitions=4)
    w = np.random.default_rng(1).normal(size=1 << SPEC.bits).astype(np.float32)
    m = ModelSnapshot(1, SPEC, w, 0.2, 1, time.time())
    pub = ModelPublisher(kafka)
    pub.publish(m)
    pub.close()
    rows = np.random.default_rng(2).integers(0, 1 << SPEC.bits, (N_FRAMES * PER_FRAME, PER_ROW)).astype(np.uint32)
    expect = 1.0 / (1.0 + np.exp(-(m.bias + w[rows].astype(np.float64).sum(axis=1))))
    offsets = np.arange(0, PER_FRAME * PER_ROW + 1, PER_ROW, dtype=np.uint32)

    group = f"g{uuid.uuid4().hex}"
    admin = AdminClient(kafka.base_config())
    procs = [start_scorer(kafka, group, tmp_path / f"scorer{i}.log") for i in range(2)]
    replies = make_consumer(kafka, f"check-{uuid.uuid4().hex}")
    replies.subscribe([kafka.topics.predictions])
    producer = make_producer(kafka, **{"linger.ms": 2})
    counts = np.zeros(N_FRAMES * PER_FRAME, np.int64)
    killed_at = -1
    try:
        deadline = time.monotonic() + 60
        while group_members(admin, group) < 2:  # both scorers own partitions before we start
            assert time.monotonic() < deadline, "scorers did not both join the group"
            assert all(p.poll() is None for p in procs)
            time.sleep(0.2)  # polling an external condition under a deadline
        sent = 0
        deadline = time.monotonic() + 120
        while counts.min() == 0 and time.monotonic() < deadline:
            # send steadily (about 200 frames per turn) so the kill lands with requests in flight
            for f in range(sent, min(sent + 200, N_FRAMES)):
                ids = np.arange(f * PER_FRAME, (f + 1) * PER_FRAME, dtype=np.uint64)
                producer.produce(kafka.topics.score, key=b"f%d" % f,
                                 value=encode_score(SPEC, ids, offsets, rows[ids].ravel()))
            sent = min(sent + 200, N_FRAMES)
            producer.poll(0)
            for msg in replies.consume(1000, 0.2):
                if msg.error():
                    continue
                frame = decode(msg.value())
                assert frame.kind is Kind.PREDICTION, frame.reason
                ids = frame.request_ids.astype(np.int64)
                np.testing.assert_allclose(frame.probabilities, expect[ids], rtol=0, atol=1e-6)
                counts[ids] += 1
            if killed_at < 0 and (counts > 0).sum() >= len(counts) // 3:
                killed_at = int((counts > 0).sum())
                procs[0].send_signal(signal.SIGKILL)
                procs[0].wait(10)
        producer.flush(10)
        assert procs[1].poll() is None, (tmp_path / "scorer1.log").read_text()[-2000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(20)
        replies.close()
    assert killed_at > 0
    unanswered = int((counts == 0).sum())
    duplicates = int((counts - 1).clip(0).sum())
    print(f"kill: killed at {killed_at} answered, {unanswered} unanswered, {duplicates} duplicate replies "
          f"of {len(counts)} requests")
    assert unanswered == 0
