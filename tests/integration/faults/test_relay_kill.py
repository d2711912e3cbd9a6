"""Relay mode survives SIGKILL: the relay (a subprocess) is killed mid-stream and restarted, and
every source record still reaches the destination; duplicates are allowed and reported."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from producer.keys import write_key
from shared.clients import ensure_pipeline_topics
from shared.frames import Kind, decode
from shared.hashspec import FeatureHasher
from shared.settings import KafkaSettings, Topics

ROOT = Path(__file__).resolve().parents[3]
N = 40_000
SCHEMA = """categorical = ["seq", "color"]
[hash]
bits = 24
[label]
column = "y"
positive = ["1"]
negative = ["0"]
"""


def _dest_records(bootstrap: str, topic: str) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"w-{uuid.uuid4().hex}"})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts)
    except KafkaException:  # a fresh topic without leaders yet
        return 0
    finally:
        c.close()


def _read_all(bootstrap: str, topic: str, deadline: float) -> list:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"r-{uuid.uuid4().hex}",
                  "auto.offset.reset": "earliest", "fetch.message.max.bytes": 16 << 20})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
        c.assign([TopicPartition(topic, p, 0) for p in parts])
        got, pos = [], {p: 0 for p in parts}
        while any(pos[p] < ends[p] for p in parts) and time.monotonic() < deadline:
            for m in c.consume(500, timeout=1.0):
                if m.error() is None:
                    got.append(m.value())
                    pos[m.partition()] = m.offset() + 1
        assert all(pos[p] >= ends[p] for p in parts), "destination not read to its end in time"
        return got
    finally:
        c.close()


def _relay(tmp_path: Path, bootstrap: str, source_topic: str, prefix: str, log_name: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "producer", "--relay-topic", source_topic, "--source-bootstrap", bootstrap,
           "--bootstrap", bootstrap, "--topic-prefix", prefix, "--schema", str(tmp_path / "s.toml"),
           "--key", str(tmp_path / "k"), "--relay-group", f"relay-{prefix}", "--frame-records", "250",
           "--idle-exit", "6", "--no-create-topics"]
    log = open(tmp_path / log_name, "wb")
    return subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ})


def test_relay_loses_nothing_when_killed_and_restarted(kafka_bootstrap, topic_factory, tmp_path):
    (tmp_path / "s.toml").write_text(SCHEMA)
    key = write_key(tmp_path / "k")
    prefix = f"t{uuid.uuid4().hex[:10]}."
    ensure_pipeline_topics(KafkaSettings(kafka_bootstrap, topics=Topics(prefix)))
    dest = prefix + "train"
    source = topic_factory(partitions=3)

    def write_source() -> None:  # paced, so the relay is killed while records are still arriving
        p = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 5})
        for i in range(N):
            rec = {"seq": f"s{i}", "color": ["red", "blue", "green"][i % 3], "y": str(i % 2)}
            p.produce(source, json.dumps(rec).encode(), key=str(i).encode())
            if i % 500 == 499:
                p.flush()
                time.sleep(0.05)
        p.flush()

    writer = threading.Thread(target=write_source)
    writer.start()
    first = _relay(tmp_path, kafka_bootstrap, source, prefix, "relay1.log")
    deadline = time.monotonic() + 90
    while _dest_records(kafka_bootstrap, dest) < 10 and time.monotonic() < deadline:
        assert first.poll() is None, (tmp_path / "relay1.log").read_text()
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    killed_at = _dest_records(kafka_bootstrap, dest)
    assert first.returncode == -signal.SIGKILL

    second = _relay(tmp_path, kafka_bootstrap, source, prefix, "relay2.log")
    writer.join(120)
    assert second.wait(120) == 0, (tmp_path / "relay2.log").read_text()

    frames = [decode(v, Kind.TRAIN) for v in _read_all(kafka_bootstrap, dest, time.monotonic() + 60)]
    fh = FeatureHasher.keyed(key, 24)
    expected = Counter(fh.index_sign("seq", f"s{i}")[0] for i in range(N))
    seq_idx = np.concatenate([f.indices[f.offsets[:-1]] for f in frames])  # first feature is seq
    got = Counter(seq_idx.tolist())
    missing = sum(max(0, n - got[i]) for i, n in expected.items())
    duplicates = len(seq_idx) - N + missing
    print(f"relay kill: {killed_at} destination messages at the kill; {len(seq_idx)} records out for {N} in; "
          f"{missing} lost, {duplicates} duplicates")
    assert missing == 0
    assert len(seq_idx) >= N
    labels = np.concatenate([f.labels for f in frames])
    assert int(labels.sum()) >= N // 2
