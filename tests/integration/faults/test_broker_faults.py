"""Broker faults mid-stream: what the producer had acknowledged is learned exactly once.

(a) The only broker of a private cluster is stopped and started again while a producer writes
frames and the trainer consumes them. (b) On the three-node cluster (replication 3, min ISR 2)
one broker is SIGKILLed mid-stream and brought back. Frames are written by the producer's own
client configuration (idempotent, acks=all); a frame counts as acknowledged when its delivery
report has no error. Each frame carries a unique key, so the topic is also checked for
duplicates, and the trainer's final snapshot must hold exactly the acknowledged records.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Callable

import pytest
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from hashbridge.kafkaproc import Cluster
from hashbridge.localkafka import free_port, start_cluster
from shared.clients import ensure_topics, make_consumer, make_producer
from shared.frames import decode
from shared.hashspec import Algorithm, SpecId, mmh3_key_id
from shared.settings import KafkaSettings, Topics
from trainer.launch import snapshot_records, start_trainer, synthetic_frames, wait_for

pytestmark = pytest.mark.slow

BITS = 16
SPEC = SpecId(Algorithm.MMH3_PUBLIC, BITS, False, mmh3_key_id(0))
PER_FRAME = 500
PHASE_FRAMES = 60  # frames before, during and after the fault
PARTITIONS = 4
STEP_TIMEOUT = 180.0


class AckedProducer:
    """The producer's client config plus a ledger of acknowledged frames (key -> records)."""

    def __init__(self, ks: KafkaSettings) -> None:
        self.ks = ks
        self.producer = make_producer(ks, **{"message.timeout.ms": 240_000})
        self.acked: dict[bytes, int] = {}
        self.failed: list[str] = []
        self.sent = 0
        self._frames = synthetic_frames(SPEC, 10**9, per_frame=PER_FRAME, seed=7)

    def _report(self, err: object, msg: object) -> None:
        if err is None:
            self.acked[msg.key()] = PER_FRAME  # type: ignore[attr-defined]
        else:
            self.failed.append(str(err))

    def send(self, frames: int) -> None:
        for _ in range(frames):
            key = b"f-%d" % self.sent
            self.sent += 1
            while True:
                try:
                    self.producer.produce(self.ks.topics.train, key=key, value=next(self._frames),
                                          partition=self.sent % PARTITIONS, on_delivery=self._report)
                    break
                except BufferError:
                    self.producer.poll(0.1)
            self.producer.poll(0)

    def flush(self, timeout: float) -> None:
        remaining = self.producer.flush(timeout)
        assert remaining == 0, f"{remaining} frames not acknowledged within {timeout} s"


def topic_keys(ks: KafkaSettings) -> Counter[bytes]:
    """How often each key occurs in the train topic (to its end offsets now)."""
    topic = ks.topics.train
    c = make_consumer(ks, f"check-{uuid.uuid4().hex}")
    try:
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in range(PARTITIONS)}
        want = {p: e for p, e in ends.items() if e > 0}
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in want])
        keys: Counter[bytes] = Counter()
        deadline = time.monotonic() + STEP_TIMEOUT
        while want and time.monotonic() < deadline:
            for m in c.consume(1000, 0.5):
                if m.error() is None:
                    decode(m.value())
                    keys[m.key()] += 1
                    if m.offset() + 1 >= want.get(m.partition(), 0):
                        want.pop(m.partition(), None)
        assert not want, "could not read the train topic to its end"
        return keys
    finally:
        c.close()


def alive(proc: subprocess.Popen, log: Path) -> bool:
    assert proc.poll() is None, "the trainer died:\n" + log.read_text(errors="replace")[-3000:]
    return True


def run_with_fault(ks: KafkaSettings, tmp_path: Path, fault: Callable[[], None],
                   restore: Callable[[], None]) -> None:
    """Produce in three phases around ``fault``/``restore`` while a trainer consumes."""
    ckpt, log = tmp_path / "ckpt", tmp_path / "trainer.log"
    proc = start_trainer(["--bootstrap", ks.bootstrap, "--topic-prefix", ks.topics.prefix,
                          "--group", f"g-{ks.topics.prefix}", "--workers", "1", "--bits", str(BITS),
                          "--key-id", SPEC.key_id_hex, "--algorithm", "mmh3_public",
                          "--checkpoint-dir", str(ckpt), "--checkpoint-seconds", "1",
                          "--no-publish", "--session-timeout-ms", "6000", "--report-seconds", "30"],
                         log_path=log)
    prod = AckedProducer(ks)
    try:
        prod.send(PHASE_FRAMES)
        prod.flush(STEP_TIMEOUT)
        wait_for(lambda: alive(proc, log) and snapshot_records(ckpt) > 0, STEP_TIMEOUT, "a first checkpoint",
                 every=0.2)
        fault()
        prod.send(PHASE_FRAMES)  # buffered by the client while the broker is away
        restore()
        prod.send(PHASE_FRAMES)
        prod.flush(STEP_TIMEOUT)
        acked = sum(prod.acked.values())
        wait_for(lambda: alive(proc, log) and snapshot_records(ckpt) >= acked, STEP_TIMEOUT,
                 f"the trainer to checkpoint {acked} records", every=0.2)
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(STEP_TIMEOUT) == 0, log.read_text(errors="replace")[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
    learned = snapshot_records(ckpt)
    keys = topic_keys(ks)
    dups = {k: n for k, n in keys.items() if n > 1}
    print(f"\nsent {prod.sent} frames, acknowledged {len(prod.acked)} ({acked} records), "
          f"failed {len(prod.failed)}; in topic {sum(keys.values())} frames, "
          f"{len(dups)} duplicated; trainer learned {learned} records")
    assert not prod.failed
    assert set(prod.acked) <= set(keys) and not dups
    assert learned == acked == sum(keys.values()) * PER_FRAME


def _settings(bootstrap: str) -> KafkaSettings:
    return KafkaSettings(bootstrap=bootstrap, topics=Topics(f"bf{uuid.uuid4().hex[:10]}."))


def test_single_broker_restart_mid_stream(tmp_path: Path) -> None:
    cluster = start_cluster(1, port=free_port(), data_dir=tmp_path / "kafka", timeout=STEP_TIMEOUT)
    try:
        ks = _settings(cluster.bootstrap)
        ensure_topics(ks, {ks.topics.train: PARTITIONS, ks.topics.dlq: 1})

        def fault() -> None:
            cluster.stop_broker(1)

        def restore() -> None:
            print(f"\nbroker back after {cluster.start_broker(1, timeout=STEP_TIMEOUT):.1f} s")

        run_with_fault(ks, tmp_path, fault, restore)
    finally:
        cluster.stop()


def test_three_brokers_one_killed_mid_stream(kafka_cluster3: Cluster, tmp_path: Path) -> None:
    ks = _settings(kafka_cluster3.bootstrap)
    ensure_topics(ks, {ks.topics.train: PARTITIONS, ks.topics.dlq: 1}, replication=3)
    meta = make_consumer(ks, f"meta-{uuid.uuid4().hex}")
    try:
        parts = meta.list_topics(ks.topics.train, timeout=30).topics[ks.topics.train].partitions
        victim = parts[0].leader  # the leader of partition 0: its partitions must fail over
        assert len(parts[0].replicas) == 3
    finally:
        meta.close()

    def fault() -> None:
        kafka_cluster3.kill_broker(victim)

    def restore() -> None:
        print(f"\nbroker {victim} back after {kafka_cluster3.start_broker(victim, timeout=STEP_TIMEOUT):.1f} s")

    run_with_fault(ks, tmp_path, fault, restore)
