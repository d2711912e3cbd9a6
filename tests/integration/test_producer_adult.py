"""The Adult training file through the real broker: every record arrives once with its label, and
no message on any topic carries a raw value of four or more characters or a column name."""
from __future__ import annotations

import csv
import re
import shutil
import signal
import time
import uuid
from pathlib import Path

import numpy as np
from confluent_kafka import Consumer, TopicPartition

from producer import __main__ as produce_cli
from producer.keys import read_key, write_key
from producer.schema import load_schema
from shared.datasets import adult_dir
from shared.frames import Kind, decode
from shared.hashspec import key_id

ROOT = Path(__file__).resolve().parents[2]
ADULT = adult_dir() / "adult.data"
DEADLINE = 60.0
PRINTABLE = re.compile(rb"[\x20-\x7e]{4,}")


def read_topic(bootstrap: str, topic: str) -> list:
    """Every message of ``topic`` up to its current end, read with a deadline."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{uuid.uuid4().hex}",
                  "enable.auto.commit": False, "fetch.message.max.bytes": 16 << 20})
    try:
        meta = c.list_topics(topic, timeout=10).topics[topic]
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in meta.partitions}
        todo = {p: hi for p, (lo, hi) in ends.items() if hi > lo}
        c.assign([TopicPartition(topic, p, lo) for p, (lo, hi) in ends.items()])
        out, deadline = [], time.monotonic() + DEADLINE
        while todo and time.monotonic() < deadline:
            for m in c.consume(500, timeout=1.0):
                if m.error() is not None:
                    continue
                out.append(m)
                if m.offset() + 1 >= todo.get(m.partition(), 1 << 62):
                    todo.pop(m.partition(), None)
        assert not todo, f"could not read {topic} to its end before the deadline"
        return out
    finally:
        c.close()


def forbidden_strings(path: Path, names: tuple[str, ...]) -> set[bytes]:
    words = {n.encode() for n in names}
    with open(path, newline="") as f:
        for row in csv.reader(f):
            for v in row:
                v = v.strip()
                if len(v) >= 4:
                    words.add(v.encode())
    return words


def test_adult_train_file_arrives_complete_and_leaks_nothing(kafka_bootstrap, tmp_path):
    shutil.copy(ROOT / "examples" / "adult.schema.toml", tmp_path)
    schema_path = tmp_path / "adult.schema.toml"
    write_key(tmp_path / "owner.key")
    prefix = f"t{uuid.uuid4().hex[:10]}."
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    rc = produce_cli.main(["--input", str(ADULT), "--schema", str(schema_path), "--key", str(tmp_path / "owner.key"),
                           "--bootstrap", kafka_bootstrap, "--topic-prefix", prefix, "--frame-records", "1000",
                           "--no-progress"])
    assert rc == 0
    # main called in-process hands the signals back: no handler keeps its producer alive
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers
    schema = load_schema(schema_path)
    assert not schema.unfitted  # edges were learned and saved next to the schema

    msgs = read_topic(kafka_bootstrap, prefix + "train")
    frames = [decode(m.value(), Kind.TRAIN) for m in msgs]
    assert sum(f.n_records for f in frames) == 32561
    assert len({m.partition() for m in msgs}) == 4  # spread over every partition
    kid = key_id(read_key(tmp_path / "owner.key"))
    assert all(f.spec.key_id == kid and f.spec.bits == 20 for f in frames)

    # labels match the file record for record: frames go round-robin, so frame k is at
    # partition k % 4, offset k // 4 of the fresh topic
    with open(ADULT, newline="") as f:
        expected = [1 if row[-1].strip() == ">50K" else 0 for row in csv.reader(f) if row]
    in_order = sorted(zip(msgs, frames), key=lambda mf: (mf[0].offset(), mf[0].partition()))
    assert np.concatenate([fr.labels for _, fr in in_order]).tolist() == expected
    assert sum(expected) == 7841
    # every frame carries 14 features per record (8 categorical, 6 binned numeric)
    assert all(np.all(np.diff(f.offsets) == 14) for f in frames)

    # no raw value (>= 4 characters) and no column name on any topic of this pipeline
    words = forbidden_strings(ADULT, schema.names or ())
    lister = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": "x"})
    try:
        topics = [t for t in lister.list_topics(timeout=10).topics if t.startswith(prefix)]
    finally:
        lister.close()
    assert len(topics) >= 5
    scanned = 0
    for topic in topics:
        for m in read_topic(kafka_bootstrap, topic):
            blob = (m.value() or b"") + (m.key() or b"") + b"".join(k.encode() + v for k, v in (m.headers() or []))
            runs = PRINTABLE.findall(blob)  # a raw string would sit in a printable run
            hits = [w for r in runs for w in words if w in r]
            assert not hits, f"{topic} message {m.offset()} contains raw strings {hits[:5]}"
            scanned += 1
    assert scanned == len(msgs)
