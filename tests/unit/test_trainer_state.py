"""Shared-memory life cycle, snapshots and the worker loop driven by a fake consumer."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shared.errors import ConfigError
from shared.frames import END_HEADER, encode_train
from shared.hashspec import Algorithm, SpecId
from shared.settings import KafkaSettings, Topics
from trainer import kernels as K
from trainer import shm as S
from trainer.checkpoint import Checkpoint, load_latest, read_records, snapshot_files, write_checkpoint
from trainer.launch import snapshot_records
from trainer.model import Hyper, Optimizer
from trainer.service import Worker, spec_from_control
from trainer.settings import TrainerSettings

SPEC = SpecId(Algorithm.MMH3_PUBLIC, 10, False, b"\x01" * 8)
OTHER = SpecId(Algorithm.MMH3_PUBLIC, 10, False, b"\x02" * 8)


def ours(name: str) -> bool:
    return name.startswith(S.PREFIX) and name.split("_")[1] == str(os.getpid())


def test_shared_state_unlinks_on_exit_and_on_error():
    before = {p.name for p in S.SHM_DIR.iterdir()}
    with S.SharedState(bits=10, workers=2, partitions=8) as a:
        assert (S.SHM_DIR / a.handle.name).exists()
        assert (a.offsets == -1).all() and a.state.shape == (1024, 2)
        with S.Attached(a.handle) as b:
            b.state[5, 0] = 1.5
            b.offsets[3] = 42
        assert a.state[5, 0] == 1.5 and a.offsets[3] == 42
    with pytest.raises(RuntimeError):
        with S.SharedState(bits=10, workers=1):
            raise RuntimeError("boom")
    assert {p.name for p in S.SHM_DIR.iterdir()} == before


def test_sweep_removes_blocks_of_dead_owners():
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    path = S.SHM_DIR / f"{S.PREFIX}{dead}_abcd1234"
    path.write_bytes(b"x")
    assert path.name in S.sweep_stale()
    assert not path.exists()


def test_checkpoint_round_trip_and_pruning(tmp_path: Path):
    for v in range(1, 6):
        ck = Checkpoint(v, "t.train", {0: 10 * v, 3: 7}, np.full((16, 2), v, np.float32),
                        np.array([0.5, 1.0]), np.arange(K.STATS_LEN, dtype=float),
                        Hyper(Optimizer.FTRL, lr=0.2, l1=0.1), SPEC)
        write_checkpoint(tmp_path, ck, keep=3)
    assert [v for v, _ in snapshot_files(tmp_path)] == [3, 4, 5]
    got = load_latest(tmp_path)
    assert got.version == 5 and got.offsets == {0: 50, 3: 7} and got.spec == SPEC
    assert got.hyper == Hyper(Optimizer.FTRL, lr=0.2, l1=0.1) and got.bits == 4
    np.testing.assert_array_equal(got.state, np.full((16, 2), 5, np.float32))
    assert not list(tmp_path.glob(".*tmp"))
    assert load_latest(tmp_path / "none") is None
    # the pollers' light read: the record count from the metadata member, the same as the stats'
    stats = np.zeros(K.STATS_LEN)
    stats[0] = 4321
    write_checkpoint(tmp_path, Checkpoint(6, "t.train", {0: 1}, np.zeros((16, 2), np.float32), np.zeros(2), stats,
                                          Hyper(), SPEC), keep=3)
    assert read_records(snapshot_files(tmp_path)[-1][1]) == load_latest(tmp_path).records == 4321
    assert snapshot_records(tmp_path) == 4321 and snapshot_records(tmp_path / "none") == -1


def test_read_records_takes_the_count_from_a_snapshot_without_it_in_meta(tmp_path: Path):
    """Snapshots whose metadata predates the count: the stats row says it."""
    stats = np.zeros(K.STATS_LEN)
    stats[0] = 1234
    np.savez(tmp_path / "snapshot-000000000001.npz", state=np.zeros((4, 2), np.float32), stats=stats,
             meta=np.frombuffer(json.dumps({"version": 1}).encode(), np.uint8))
    assert read_records(tmp_path / "snapshot-000000000001.npz") == 1234


class FakeMsg:
    def __init__(self, value, partition, offset, topic="t.train", headers=None):
        self._v, self._p, self._o, self._t, self._h = value, partition, offset, topic, headers

    def headers(self): return self._h

    def value(self): return self._v
    def key(self): return None
    def partition(self): return self._p
    def offset(self): return self._o
    def topic(self): return self._t
    def error(self): return None


class FakeConsumer:
    def __init__(self, batches):
        self.batches, self.stored = list(batches), []

    def consume(self, n, timeout):
        return self.batches.pop(0) if self.batches else []

    def store_offsets(self, offsets):
        self.stored += offsets

    def get_watermark_offsets(self, tp, cached=False):
        return (0, 100)

    def close(self):
        pass


class FakeProducer:
    def __init__(self):
        self.sent = []

    def produce(self, topic, value=None, key=None, headers=None):
        self.sent.append((topic, dict(headers)))

    def flush(self, timeout=None):
        return 0


def frame(spec, n, rng):
    offsets = np.arange(0, 3 * n + 1, 3, dtype=np.uint32)
    return encode_train(spec, rng.integers(0, 2, n).astype(np.uint8), offsets,
                        rng.integers(0, 1024, 3 * n).astype(np.uint32))


def test_worker_learns_records_offsets_and_dead_letters():
    rng = np.random.default_rng(1)
    settings = TrainerSettings(kafka=KafkaSettings(topics=Topics("t.")), bits=10, workers=1)
    batches = [[FakeMsg(frame(SPEC, 50, rng), 0, 0), FakeMsg(frame(SPEC, 30, rng), 1, 0)],
               [FakeMsg(b"garbage", 0, 1), FakeMsg(frame(OTHER, 20, rng), 1, 1),
                FakeMsg(frame(SPEC, 20, rng), 0, 2)]]
    with S.SharedState(bits=10, workers=1, partitions=4) as a:
        dlq = FakeProducer()
        w = Worker(settings, a, 0, FakeConsumer(batches), dlq)
        assert w.run(max_records=100) == 100
        assert a.records() == 100
        assert spec_from_control(a.control, 10) == SPEC  # adopted from the first valid frame
        assert list(a.offsets) == [3, 2, -1, -1]
        assert [h[S_REASON] for _, h in dlq.sent] == [b"truncated", b"spec_mismatch"]
        assert all(t == "t.dlq" for t, _ in dlq.sent)
        c = a.counters[0]
        assert c[S.W_REJECT + S.REJECT_REASONS.index("spec_mismatch")] == 1
        assert c[S.W_RECORDS] == 100 and c[S.W_FRAMES] == 3
        assert a.bias[0] != 0.0 and a.state[:, 0].any()
        del w


S_REASON = "hb.reason"


def test_end_markers_say_when_every_partition_read_has_ended():
    """A partition is at its end while the last message learned from it is an empty frame with
    the end header; a data frame after it, or a partition without a marker, is not."""
    rng = np.random.default_rng(2)
    settings = TrainerSettings(kafka=KafkaSettings(topics=Topics("t.")), bits=10, workers=1)
    empty = encode_train(SPEC, np.zeros(0, np.uint8), np.zeros(1, np.uint32), np.zeros(0, np.uint32))
    end = [(END_HEADER, b"")]
    batches = [[FakeMsg(frame(SPEC, 40, rng), 0, 0), FakeMsg(empty, 0, 1, headers=end), FakeMsg(frame(SPEC, 10, rng), 1, 0)],
               [FakeMsg(empty, 1, 1, headers=[("other", b"")]), FakeMsg(frame(SPEC, 10, rng), 1, 2)],
               [FakeMsg(empty, 1, 3, headers=end)],
               [FakeMsg(frame(SPEC, 5, rng), 0, 2)]]
    with S.SharedState(bits=10, workers=1, partitions=4) as a:
        assert not a.at_end_markers() and not a.near_end_markers()  # nothing read
        w = Worker(settings, a, 0, FakeConsumer(batches), FakeProducer())
        seen, near = [], []
        for batch in batches:
            w.process(batch)
            seen.append(a.at_end_markers())
            near.append(a.near_end_markers())
        assert seen == [False, False, True, False]
        assert near == [True, True, True, True]  # partition 0 ends at its marker, later partition 1
        assert list(a.ends) == [2, 4, 0, 0] and list(a.offsets) == [3, 4, -1, -1]
        assert a.records() == 65
        del w


def test_worker_pauses_at_batch_boundary_and_acks():
    settings = TrainerSettings(kafka=KafkaSettings(topics=Topics("t.")), bits=10, workers=1)
    with S.SharedState(bits=10, workers=1, partitions=4) as a:
        a.control[S.C_EPOCH] = 7
        a.control[S.C_PAUSE] = 1
        w = Worker(settings, a, 0, FakeConsumer([]), FakeProducer())
        w._stop = False
        a.control[S.C_STOP] = 1  # stop while paused: the wait must end
        w._pause_if_asked()
        assert a.control[S.C_ACK] == 7
        del w


def test_settings_from_flags_and_environment():
    s = TrainerSettings.from_args(
        ["--workers", "3", "--bits", "12", "--key-id", "01" * 8, "--algorithm", "mmh3_public",
         "--optimizer", "ftrl", "--l1", "0.5", "--until-caught-up", "--no-publish"],
        env={"HASHBRIDGE_BOOTSTRAP": "b:1", "HASHBRIDGE_TOPIC_PREFIX": "x.", "HASHBRIDGE_CHECKPOINT_DIR": "/c"})
    assert s.workers == 3 and s.bits == 12 and s.until_caught_up and not s.publish
    assert s.spec == SpecId(Algorithm.MMH3_PUBLIC, 12, False, b"\x01" * 8)
    assert s.hyper.optimizer is Optimizer.FTRL and s.hyper.l1 == 0.5
    assert s.kafka.bootstrap == "b:1" and s.kafka.topics.train == "x.train" and str(s.checkpoint_dir) == "/c"
    cfg = s.consumer_config()
    assert cfg["enable.auto.offset.store"] is False and cfg["group.id"] == "hb-trainer"
    with pytest.raises(ValueError):
        Hyper(Optimizer.ADAGRAD, l1=0.1)  # L1 is FTRL's
    assert s.checkpoint_idle_seconds == 1.0
    assert TrainerSettings.from_args(["--checkpoint-idle-seconds", "0"]).checkpoint_idle_seconds == 0.0
    with pytest.raises(ConfigError):
        TrainerSettings.from_args(["--checkpoint-idle-seconds", "-1"])


def test_supervisor_restore_and_caught_up(tmp_path: Path):
    from trainer.supervisor import Supervisor

    settings = TrainerSettings(bits=4, workers=2, checkpoint_dir=tmp_path, publish=False)
    sup = Supervisor(settings)
    ck = Checkpoint(3, "hb.train", {0: 5, 2: 9}, np.ones((16, 2), np.float32), np.array([0.25, 2.0]),
                    np.full(K.STATS_LEN, 2.0), settings.hyper, SpecId(SPEC.algorithm, 4, False, SPEC.key_id))
    with S.SharedState(bits=4, workers=2, partitions=4) as a:
        sup.arrays = a
        a.stats[1] = 7.0
        sup._restore(ck)
        assert list(a.offsets) == [5, -1, 9, -1] and a.records() == 2 and not a.stats[1].any()
        assert spec_from_control(a.control, 4) == ck.spec
        assert sup.caught_up({0: (0, 5), 1: (3, 3), 2: (0, 9)})
        assert not sup.caught_up({0: (0, 6)})
        assert not sup.caught_up({1: (0, 1)})
        snap = sup._capture()
        assert snap.offsets == {0: 5, 2: 9} and snap.version == 1 and snap.records == 2
        sup.arrays = None


def test_on_assign_starts_each_partition_at_the_shared_offset():
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    class AssignConsumer(FakeConsumer):
        def assign(self, partitions):
            self.assigned = [(tp.partition, tp.offset) for tp in partitions]

    settings = TrainerSettings(kafka=KafkaSettings(topics=Topics("t.")), bits=10, workers=1)
    with S.SharedState(bits=10, workers=1, partitions=4) as a:
        a.offsets[2] = 17
        c = AssignConsumer([])
        w = Worker(settings, a, 0, c, FakeProducer())
        w._on_assign(c, [TopicPartition("t.train", 1), TopicPartition("t.train", 2)])
        assert c.assigned == [(1, OFFSET_BEGINNING), (2, 17)]
        assert w.assigned == {1, 2}
        w._on_revoke(c, [TopicPartition("t.train", 1)])
        assert w.assigned == {2}
        del w
