"""``hashbridge dlq`` against a real broker: dead letters made by ``send_dead_letter`` are listed
with their headers and counted per reason."""
from __future__ import annotations

import io
import json
import time
import uuid

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from hashbridge import dlq
from shared.clients import make_producer
from shared.deadletter import send_dead_letter
from shared.settings import KafkaSettings

WAIT = 30.0


def _consume_all(bootstrap: str, topic: str, partitions: int, count: int) -> list:
    """Read ``count`` messages of ``topic`` back from the beginning (assign, no group commits)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"hb-test-{uuid.uuid4().hex}",
                  "enable.auto.commit": False})
    try:
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        got: list = []
        deadline = time.monotonic() + WAIT
        while len(got) < count:
            assert time.monotonic() < deadline, f"only {len(got)} of {count} messages came back"
            for msg in c.consume(count, timeout=0.5):
                if msg.error() is None:
                    got.append(msg)
        return got
    finally:
        c.close()


def _run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    rc = dlq.main(list(argv), out=out)
    return rc, out.getvalue()


@pytest.fixture
def dead_letters(kafka_bootstrap: str, topic_factory):
    """Four dead letters in ``<prefix>dlq``, made from real messages of ``<prefix>train``."""
    prefix = f"hbt-{uuid.uuid4().hex[:10]}."
    settings = KafkaSettings.from_env(bootstrap=kafka_bootstrap, prefix=prefix, env={})
    source = topic_factory(2, name=settings.topics.train)
    topic_factory(1, name=settings.topics.dlq)
    producer = make_producer(settings)
    payloads = [b"HBFR-not-really-a-frame", b"x" * 100, b"", b"\x00" * 41]
    for i, value in enumerate(payloads):
        producer.produce(source, value=value, key=b"k%d" % i, partition=i % 2)
    assert producer.flush(WAIT) == 0
    msgs = sorted(_consume_all(kafka_bootstrap, source, 2, len(payloads)), key=lambda m: m.value())
    plan = {b"": ("truncated", "trainer"), b"\x00" * 41: ("bad_magic", "trainer"),
            b"HBFR-not-really-a-frame": ("index_out_of_range", "trainer"),
            b"x" * 100: ("index_out_of_range", "scorer")}
    for msg in msgs:
        reason, service = plan[msg.value()]
        send_dead_letter(producer, settings.topics.dlq, msg, reason, f"detail of {reason}", service)
    assert producer.flush(WAIT) == 0
    return prefix, settings, msgs, plan


def test_lists_every_dead_letter_with_its_headers(kafka_bootstrap, dead_letters):
    prefix, settings, msgs, plan = dead_letters
    rc, text = _run("--bootstrap", kafka_bootstrap, "--prefix", prefix, "--json", "--limit", "0")
    assert rc == 0
    doc = json.loads(text)
    assert doc["topic"] == settings.topics.dlq
    assert doc["total"] == 4
    assert doc["counts"] == {"index_out_of_range": 2, "truncated": 1, "bad_magic": 1}
    got = {(r["source_partition"], r["source_offset"]): r for r in doc["records"]}
    assert len(got) == 4
    for msg in msgs:
        r = got[(msg.partition(), msg.offset())]
        reason, service = plan[msg.value()]
        assert r["source_topic"] == settings.topics.train
        assert (r["reason"], r["service"], r["size"]) == (reason, service, len(msg.value()))
        assert r["detail"] == f"detail of {reason}"
    assert sorted(r["offset"] for r in doc["records"]) == [0, 1, 2, 3]  # one partition, in order


def test_limit_keeps_the_newest_but_counts_all(kafka_bootstrap, dead_letters):
    prefix, _, _, _ = dead_letters
    rc, text = _run("--bootstrap", kafka_bootstrap, "--prefix", prefix, "--json", "--limit", "2")
    assert rc == 0
    doc = json.loads(text)
    assert doc["total"] == 4 and sum(doc["counts"].values()) == 4
    assert [r["offset"] for r in doc["records"]] == [2, 3]


def test_text_output_has_a_summary_per_reason(kafka_bootstrap, dead_letters):
    prefix, settings, _, _ = dead_letters
    rc, text = _run("--bootstrap", kafka_bootstrap, "--prefix", prefix)
    assert rc == 0
    assert f"4 dead letter(s) in {settings.topics.dlq}" in text
    summary = text.split("by reason:")[1].split()
    assert dict(zip(summary[::2], map(int, summary[1::2]))) == {"index_out_of_range": 2, "truncated": 1,
                                                                  "bad_magic": 1}
    assert text.count(f"from {settings.topics.train}[") == 4


def test_missing_dlq_topic_lists_nothing(kafka_bootstrap):
    rc, text = _run("--bootstrap", kafka_bootstrap, "--prefix", f"hbt-none-{uuid.uuid4().hex[:8]}.", "--json")
    assert rc == 0
    assert json.loads(text)["total"] == 0


def test_unreachable_broker_fails_with_exit_1():
    rc, _ = _run("--bootstrap", "127.0.0.1:1", "--timeout", "2")
    assert rc == 1
