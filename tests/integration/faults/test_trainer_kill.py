"""SIGKILL the trainer at random points: the model still learns every record exactly once."""
from __future__ import annotations

import os
import random
import signal
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Consumer, TopicPartition

from shared.clients import ensure_topics
from shared.hashspec import Algorithm, SpecId, mmh3_key_id
from shared.settings import KafkaSettings, Topics
from trainer import shm as S
from trainer.checkpoint import load_latest
from trainer.launch import produce_synthetic, snapshot_records, start_trainer, wait_for

BITS = 16
SPEC = SpecId(Algorithm.MMH3_PUBLIC, BITS, False, mmh3_key_id(0))
N = 200_000


CHUNKS = (40_000, 30_000, 30_000, 30_000, 30_000, 30_000, 10_000)  # sums to N


def setup_topic(bootstrap: str, partitions: int) -> KafkaSettings:
    ks = KafkaSettings(bootstrap=bootstrap, topics=Topics(f"t{uuid.uuid4().hex[:10]}."))
    ensure_topics(ks, {ks.topics.train: partitions, ks.topics.dlq: 1})
    return ks


def produce_chunk(ks: KafkaSettings, k: int, partitions: int) -> None:
    produce_synthetic(ks, ks.topics.train, SPEC, CHUNKS[k], per_frame=1000, partitions=partitions,
                      seed=100 + k)


def args(ks: KafkaSettings, ckpt: Path, group: str, workers: int, *extra: str) -> list[str]:
    return ["--bootstrap", ks.bootstrap, "--topic-prefix", ks.topics.prefix, "--group", group,
            "--workers", str(workers), "--bits", str(BITS), "--checkpoint-dir", str(ckpt),
            "--checkpoint-records", "10000", "--batch-messages", "4", "--no-publish",
            "--session-timeout-ms", "6000", "--report-seconds", "30", *extra]


def run_to_end(ks: KafkaSettings, ckpt: Path, group: str, workers: int, log: Path) -> None:
    proc = start_trainer(args(ks, ckpt, group, workers, "--until-caught-up"), log_path=log)
    try:
        assert proc.wait(180) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def kill_loop(ks: KafkaSettings, ckpt: Path, group: str, workers: int, partitions: int, log: Path,
              rng: random.Random) -> None:
    """The stream arrives in chunks; each incarnation resumes, learns, and is SIGKILLed at a
    random moment after its first new snapshot (sometimes mid-backlog, sometimes idle)."""
    kills = len(CHUNKS) - 2
    produce_chunk(ks, 0, partitions)
    for k in range(kills):
        produce_chunk(ks, k + 1, partitions)
        before = snapshot_records(ckpt)
        proc = start_trainer(args(ks, ckpt, group, workers), log_path=log)
        try:
            wait_for(lambda: snapshot_records(ckpt) > before, 120, "a snapshot from this incarnation")
            time.sleep(rng.uniform(0.0, 0.06))  # random kill point, often mid-backlog (not a wait)
            if k % 2:
                os.killpg(proc.pid, signal.SIGKILL)  # supervisor and workers at once
            else:
                os.kill(proc.pid, signal.SIGKILL)  # supervisor only: workers die with it
            proc.wait(30)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        wait_for(lambda: not _alive_group(proc.pid), 30, "the killed trainer's workers to exit")
    produce_chunk(ks, len(CHUNKS) - 1, partitions)


def _alive_group(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def end_offsets(ks: KafkaSettings, partitions: int) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": ks.bootstrap, "group.id": f"probe-{uuid.uuid4().hex}"})
    try:
        return {p: c.get_watermark_offsets(TopicPartition(ks.topics.train, p), timeout=10)[1]
                for p in range(partitions)}
    finally:
        c.close()


@pytest.mark.slow
def test_single_worker_killed_five_times_ends_with_the_uninterrupted_weights(kafka_bootstrap, tmp_path):
    ks = setup_topic(kafka_bootstrap, partitions=1)  # one partition: one order, so exact weights
    log = tmp_path / "trainer.log"
    kill_loop(ks, tmp_path / "killed", "killed", 1, 1, log=log, rng=random.Random(42))
    run_to_end(ks, tmp_path / "killed", "killed", 1, log)
    assert log.read_text().count("resuming from snapshot") >= 5
    run_to_end(ks, tmp_path / "ref", "ref", 1, log)  # uninterrupted, over the same stream
    ref, got = load_latest(tmp_path / "ref"), load_latest(tmp_path / "killed")
    assert ref.records == got.records == N
    assert got.offsets == ref.offsets == end_offsets(ks, 1)
    np.testing.assert_allclose(got.state, ref.state, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got.bias, ref.bias, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got.stats, ref.stats, rtol=1e-9, atol=1e-6)
    assert not [p for p in S.SHM_DIR.iterdir() if p.name.startswith(S.PREFIX) and not S._alive(
        int(p.name.split("_")[1]))]


@pytest.mark.slow
def test_two_workers_killed_and_restarted_learn_each_record_once(kafka_bootstrap, tmp_path):
    ks = setup_topic(kafka_bootstrap, partitions=4)
    log = tmp_path / "trainer.log"
    kill_loop(ks, tmp_path / "ck", "g2", 2, 4, log=log, rng=random.Random(7))
    run_to_end(ks, tmp_path / "ck", "g2", 2, log)
    got = load_latest(tmp_path / "ck")
    assert got.records == N
    assert got.offsets == end_offsets(ks, 4)
