"""SIGTERM stops ``hashbridge produce`` cleanly: what it reports as published is exactly what the
topic holds, and it exits 0."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, TopicPartition

from producer.keys import write_key
from shared.clients import ensure_pipeline_topics
from shared.frames import decode
from shared.settings import KafkaSettings, Topics

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = 'categorical = ["a", "b"]\n[label]\ncolumn = "y"\npositive = ["1"]\nnegative = ["0"]\n'


def _messages(bootstrap: str, topic: str) -> list[bytes]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"r-{uuid.uuid4().hex}",
                  "fetch.message.max.bytes": 16 << 20})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
        c.assign([TopicPartition(topic, p, 0) for p in parts])
        out, pos, deadline = [], {p: 0 for p in parts}, time.monotonic() + 60
        while any(pos[p] < ends[p] for p in parts) and time.monotonic() < deadline:
            for m in c.consume(500, timeout=1.0):
                if m.error() is None:
                    out.append(m.value())
                    pos[m.partition()] = m.offset() + 1
        return out
    finally:
        c.close()


def _count(bootstrap: str, topic: str) -> int:
    """Messages in ``topic``; 0 while a fresh topic has no leaders yet."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "w"})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts)
    except KafkaException:
        return 0
    finally:
        c.close()


def test_sigterm_flushes_what_was_accepted_and_exits_zero(kafka_bootstrap, tmp_path):
    (tmp_path / "s.toml").write_text(SCHEMA)
    write_key(tmp_path / "k")
    n = 300_000
    with open(tmp_path / "in.jsonl", "w") as f:
        for i in range(n):
            f.write(json.dumps({"a": f"v{i % 1000}", "b": f"w{i % 77}", "y": str(i % 2)}) + "\n")
    prefix = f"t{uuid.uuid4().hex[:10]}."
    ensure_pipeline_topics(KafkaSettings(kafka_bootstrap, topics=Topics(prefix)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "producer", "--jsonl", str(tmp_path / "in.jsonl"), "--schema", str(tmp_path / "s.toml"),
         "--key", str(tmp_path / "k"), "--bootstrap", kafka_bootstrap, "--topic-prefix", prefix,
         "--frame-records", "1000", "--no-create-topics", "--no-progress"],
        cwd=ROOT, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while _count(kafka_bootstrap, prefix + "train") < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    m = re.search(r"published ([\d,]+) in ([\d,]+) frames", err)
    assert m, err
    published, frames = int(m.group(1).replace(",", "")), int(m.group(2).replace(",", ""))
    msgs = _messages(kafka_bootstrap, prefix + "train")
    assert len(msgs) == frames
    assert sum(decode(v).n_records for v in msgs) == published
    assert 0 < published <= n
    print(f"SIGTERM: published {published} of {n} records in {frames} frames before stopping")
