"""``hashbridge produce --watch``: files renamed into the spool are published whole, in name order,
and moved to done/; a file it cannot read goes to failed/ with its reason; files still being
written (hidden names) are left alone; SIGTERM stops it with exit 0."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from producer.keys import write_key
from shared.clients import ensure_pipeline_topics
from shared.frames import decode
from shared.settings import KafkaSettings, Topics
from tests.integration.test_producer_sigterm import SCHEMA, _messages

ROOT = Path(__file__).resolve().parents[2]


def _csv(path: Path, rows: int, salt: str) -> None:
    with open(path, "w") as f:
        f.write("a,b,y\n")
        for i in range(rows):
            f.write(f"{salt}{i % 500},w{i % 31},{i % 2}\n")


def _wait(cond, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


def _count_records(bootstrap: str, topic: str) -> int:
    return sum(decode(v).n_records for v in _messages(bootstrap, topic))


def _setup(bootstrap: str, tmp_path: Path) -> tuple[Path, str]:
    """Schema, key, an empty spool and fresh pipeline topics; returns the spool and topic prefix."""
    (tmp_path / "s.toml").write_text(SCHEMA)
    write_key(tmp_path / "k")
    spool = tmp_path / "spool"
    spool.mkdir()
    prefix = f"t{uuid.uuid4().hex[:10]}."
    ensure_pipeline_topics(KafkaSettings(bootstrap, topics=Topics(prefix)))
    return spool, prefix


def _watcher(spool: Path, tmp_path: Path, bootstrap: str, prefix: str, log: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "producer", "--watch", str(spool), "--schema", str(tmp_path / "s.toml"),
         "--key", str(tmp_path / "k"), "--bootstrap", bootstrap, "--topic-prefix", prefix,
         "--frame-records", "1000", "--no-create-topics", *extra],
        cwd=ROOT, stdout=open(log, "w"), stderr=subprocess.STDOUT, text=True)


def test_watch_publishes_each_landed_file_once_and_moves_it(kafka_bootstrap, tmp_path):
    spool, prefix = _setup(kafka_bootstrap, tmp_path)
    log = tmp_path / "producer.log"
    proc = _watcher(spool, tmp_path, kafka_bootstrap, prefix, log)
    try:
        assert _wait(lambda: "ready: watching" in log.read_text()), log
        _csv(spool / ".b.csv", 2500, "x")  # hidden while written: must not be picked up
        _csv(tmp_path / "a.csv", 4000, "v")
        (spool / "notes.txt").write_text("not data")
        (spool / "broken.csv").write_text("a,b\n1,2\n")  # no label column: refused, kept aside
        os.rename(tmp_path / "a.csv", spool / "a.csv")
        assert _wait(lambda: (spool / "done" / "a.csv").exists()), log.read_text()
        assert _wait(lambda: (spool / "failed" / "broken.csv").exists())
        assert "Column 'y'" in (spool / "failed" / "broken.csv.error").read_text()
        time.sleep(0.3)
        assert (spool / ".b.csv").exists() and (spool / "notes.txt").exists()
        os.rename(spool / ".b.csv", spool / "b.csv")
        assert _wait(lambda: (spool / "done" / "b.csv").exists())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 1  # one file failed
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert "2 files published (6,500 records), 1 failed" in text, text
    frames = [decode(v) for v in _messages(kafka_bootstrap, prefix + "train")]
    assert sum(f.n_records for f in frames) == 6500
    data = [f for f in frames if f.n_records]
    assert len(data) == 4 + 3  # each file cut into its own frames of 1000
    assert len(frames) - len(data) == 2 * 4  # and followed by an end marker on each of the 4 partitions


def test_end_markers_let_a_trainer_snapshot_each_file_at_once(kafka_bootstrap, tmp_path):
    """With its record, interval and idle rules out of reach, the trainer still snapshots each file
    the watching producer publishes: the file's end markers reach every partition after its frames."""
    from producer.schema import load_schema
    from trainer.launch import snapshot_records, start_trainer, wait_for

    spool, prefix = _setup(kafka_bootstrap, tmp_path)
    ck, tlog, plog = tmp_path / "ck", tmp_path / "trainer.log", tmp_path / "producer.log"
    trainer = start_trainer(["--bootstrap", kafka_bootstrap, "--topic-prefix", prefix, "--group", f"g-{prefix}",
                             "--workers", "2", "--bits", str(load_schema(tmp_path / "s.toml").bits),
                             "--checkpoint-dir", str(ck), "--checkpoint-records", str(10**12),
                             "--checkpoint-seconds", "1e9", "--checkpoint-idle-seconds", "0", "--no-publish"],
                            log_path=tlog)
    producer = _watcher(spool, tmp_path, kafka_bootstrap, prefix, plog)
    try:
        assert _wait(lambda: "ready: watching" in plog.read_text()), plog.read_text()
        total = 0
        for i, rows in enumerate((3000, 1700)):
            _csv(tmp_path / f"{i}.csv", rows, f"e{i}")
            os.rename(tmp_path / f"{i}.csv", spool / f"{i}.csv")
            total += rows
            wait_for(lambda: snapshot_records(ck) == total, 90, f"file {i} in a snapshot")
            assert trainer.poll() is None, tlog.read_text()[-3000:]
    finally:
        for proc in (producer, trainer):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        assert producer.wait(60) == 0 and trainer.wait(60) == 0, tlog.read_text()[-3000:]
    text = tlog.read_text()
    assert "(end): 3000 records" in text and "(end): 4700 records" in text, text[-3000:]


def test_sigkill_mid_file_leaves_it_in_the_spool_and_a_restart_publishes_it_whole(kafka_bootstrap, tmp_path):
    """At least once: a crash during a file loses nothing; the next start publishes the file again."""
    spool, prefix = _setup(kafka_bootstrap, tmp_path)
    topic = prefix + "train"
    n = 2_000_000  # ~2 s of publishing here: the kill lands within the first frames, far from the end
    _csv(tmp_path / "big.csv", n, "k")
    first = _watcher(spool, tmp_path, kafka_bootstrap, prefix, tmp_path / "p1.log", "--readahead-mib", "1")
    marks = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"w-{uuid.uuid4().hex}"})
    try:
        parts = [TopicPartition(topic, p) for p in marks.list_topics(topic, timeout=10).topics[topic].partitions]
        assert _wait(lambda: "ready: watching" in (tmp_path / "p1.log").read_text())
        os.rename(tmp_path / "big.csv", spool / "big.csv")
        deadline = time.monotonic() + 120  # one client asking for the end offsets: ~1 ms a round here
        while sum(marks.get_watermark_offsets(tp, timeout=10)[1] for tp in parts) == 0:
            assert time.monotonic() < deadline and first.poll() is None, (tmp_path / "p1.log").read_text()
            time.sleep(0.002)
        first.kill()
        first.wait(30)
    finally:
        marks.close()
        if first.poll() is None:
            first.kill()
    assert (spool / "big.csv").exists(), "the whole file went out before the kill: make it longer"
    assert not (spool / "done" / "big.csv").exists()
    before = _count_records(kafka_bootstrap, topic)
    assert 0 < before < n
    second = _watcher(spool, tmp_path, kafka_bootstrap, prefix, tmp_path / "p2.log", "--idle-exit", "1")
    assert second.wait(120) == 0, (tmp_path / "p2.log").read_text()
    assert (spool / "done" / "big.csv").exists()
    assert f"1 files published ({n:,} records)" in (tmp_path / "p2.log").read_text()
    assert _count_records(kafka_bootstrap, topic) == before + n  # the file again, whole: nothing lost
