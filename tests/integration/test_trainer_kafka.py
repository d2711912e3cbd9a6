"""The trainer against the real broker: learn a stream once, refuse bad frames, publish, stop cleanly."""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import uuid
from pathlib import Path

import numpy as np
from confluent_kafka import Consumer, TopicPartition

from shared.clients import ensure_topics, make_producer
from shared.deadletter import headers_dict
from shared.hashspec import Algorithm, SpecId, mmh3_key_id
from shared.settings import KafkaSettings, Topics
from trainer import shm as S
from trainer.checkpoint import load_latest
from trainer.launch import produce_synthetic, snapshot_records, start_trainer, wait_for, worker_pids

BITS = 16
SPEC = SpecId(Algorithm.MMH3_PUBLIC, BITS, False, mmh3_key_id(0))


def make_env(kafka_bootstrap: str, partitions: int = 4) -> KafkaSettings:
    ks = KafkaSettings(bootstrap=kafka_bootstrap, topics=Topics(f"t{uuid.uuid4().hex[:10]}."))
    ensure_topics(ks, {ks.topics.train: partitions, ks.topics.dlq: 1})
    return ks


def trainer_args(ks: KafkaSettings, ckpt: Path, *extra: str, workers: int = 1) -> list[str]:
    return ["--bootstrap", ks.bootstrap, "--topic-prefix", ks.topics.prefix, "--group",
            f"g-{ks.topics.prefix}", "--workers", str(workers), "--bits", str(BITS),
            "--checkpoint-dir", str(ckpt), "--session-timeout-ms", "6000", "--report-seconds", "5",
            *extra]


def finish(proc: subprocess.Popen, timeout: float = 120) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise


def our_shm(pid: int) -> list[str]:
    return [p.name for p in S.SHM_DIR.iterdir() if p.name.startswith(f"{S.PREFIX}{pid}_")]


def test_learns_every_record_once_refuses_bad_frames_and_publishes(kafka_bootstrap, tmp_path):
    ks = make_env(kafka_bootstrap)
    n = 60_000
    produce_synthetic(ks, ks.topics.train, SPEC, n, per_frame=1000, partitions=4)
    p = make_producer(ks)
    p.produce(ks.topics.train, value=b"not a frame at all " * 4, partition=1)
    other = SpecId(Algorithm.MMH3_PUBLIC, BITS, False, mmh3_key_id(7))
    from trainer.launch import synthetic_frames
    p.produce(ks.topics.train, value=next(synthetic_frames(other, 10)), partition=2)
    p.flush(30)
    proc = start_trainer(trainer_args(ks, tmp_path / "ck", "--until-caught-up", "--key-id",
                                      SPEC.key_id_hex, "--algorithm", "mmh3_public", workers=2),
                         log_path=tmp_path / "trainer.log")
    assert finish(proc) == 0, (tmp_path / "trainer.log").read_text()[-3000:]
    snap = load_latest(tmp_path / "ck")
    assert snap.records == n
    assert snap.spec == SPEC
    c = Consumer({"bootstrap.servers": ks.bootstrap, "group.id": f"probe-{uuid.uuid4().hex}",
                  "auto.offset.reset": "earliest"})
    ends = {q: c.get_watermark_offsets(TopicPartition(ks.topics.train, q), timeout=10)[1] for q in range(4)}
    assert snap.offsets == ends
    c.subscribe([ks.topics.dlq])
    reasons: list[str] = []

    def two_dead_letters() -> bool:
        m = c.poll(0.5)
        if m is not None and not m.error():
            reasons.append(headers_dict(m.headers())["hb.reason"])
        return len(reasons) == 2

    wait_for(two_dead_letters, 60, "two dead letters")
    c.close()
    assert sorted(reasons) == ["bad_magic", "spec_mismatch"]
    log = (tmp_path / "trainer.log").read_text()
    assert "progressive overall" in log and "published model version" in log
    from shared.models import ModelWatcher
    watcher = ModelWatcher(ks)
    model = wait_for(lambda: watcher.poll(1.0) or watcher.latest, 60, "a published model")
    watcher.close()
    assert model.spec == SPEC and model.version >= 1 and model.weights.shape == (1 << BITS,)
    np.testing.assert_allclose(model.weights, snap.state[:, 0])
    assert not our_shm(proc.pid)


def test_sigterm_checkpoints_and_a_killed_worker_is_replaced(kafka_bootstrap, tmp_path):
    """Phase 1 learned; a worker SIGKILLed while phase 2 streams in; SIGTERM; counts add up."""
    ks = make_env(kafka_bootstrap)
    ck = tmp_path / "ck"
    produce_synthetic(ks, ks.topics.train, SPEC, 50_000, per_frame=500, partitions=4, seed=1)
    proc = start_trainer(trainer_args(ks, ck, "--no-publish", "--checkpoint-records", "5000",
                                      "--checkpoint-seconds", "1", "--batch-messages", "4", workers=2),
                         log_path=tmp_path / "trainer.log")
    try:
        wait_for(lambda: snapshot_records(ck) == 50_000, 90, "phase 1 learned")
        workers = wait_for(lambda: worker_pids(proc.pid) if len(worker_pids(proc.pid)) >= 2 else None,
                           30, "two workers")
        t = threading.Thread(target=produce_synthetic, args=(ks, ks.topics.train, SPEC, 100_000),
                             kwargs={"per_frame": 500, "partitions": 4, "seed": 2})
        t.start()
        wait_for(lambda: snapshot_records(ck) > 50_000, 60, "phase 2 under way")
        os.kill(workers[0], signal.SIGKILL)
        t.join()
        wait_for(lambda: snapshot_records(ck) == 150_000, 120, "everything learned after the kill")
        proc.send_signal(signal.SIGTERM)
        assert finish(proc, 60) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    log = (tmp_path / "trainer.log").read_text()
    assert "restoring snapshot" in log, log[-3000:]
    snap = load_latest(ck)
    assert snap.records == 150_000
    assert not our_shm(proc.pid)
    assert not worker_pids(proc.pid)


def test_a_pause_in_the_stream_snapshots_and_publishes_at_once(kafka_bootstrap, tmp_path):
    """With the periodic triggers out of reach, each burst's records reach a snapshot and a
    published model because the stream paused after it (--checkpoint-idle-seconds)."""
    from shared.models import scan_manifests

    def newest_published_records() -> int:
        manifests: dict = {}
        scan_manifests(ks, timeout=10, full=manifests)
        return manifests[max(manifests)]["records_seen"] if manifests else -1

    ks = make_env(kafka_bootstrap)
    ensure_topics(ks, {ks.topics.models: 1})
    ck = tmp_path / "ck"
    proc = start_trainer(trainer_args(ks, ck, "--checkpoint-records", str(10**12), "--checkpoint-seconds",
                                      "1e9", "--checkpoint-idle-seconds", "0.3", workers=2),
                         log_path=tmp_path / "trainer.log")
    try:
        total = 0
        for burst, n in enumerate((20_000, 7_000)):
            produce_synthetic(ks, ks.topics.train, SPEC, n, per_frame=500, partitions=4, seed=burst)
            total += n
            wait_for(lambda: snapshot_records(ck) == total, 90, f"burst {burst} in a snapshot")
            assert proc.poll() is None, "the snapshot must come from the running trainer, not its exit"
            wait_for(lambda: newest_published_records() == total, 60, f"burst {burst} published")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        assert finish(proc, 60) == 0, (tmp_path / "trainer.log").read_text()[-3000:]
    log = (tmp_path / "trainer.log").read_text()
    assert "(idle): 20000 records" in log and f"(idle): {total} records" in log, log[-3000:]
