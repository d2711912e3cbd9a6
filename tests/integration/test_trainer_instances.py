"""Scale-out on the real broker: three trainer instances (own shared memory, own checkpoint dir,
one group) exchange deltas over the deltas topic and end with one model, as good as one instance
trained on the whole stream, every record in it exactly once (docs/scale-out.md)."""
from __future__ import annotations

import os
import signal
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import ConsumerGroupState, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from benchmarks.datagen import auc
from shared.clients import ensure_topics, make_producer
from shared.frames import decode, encode_train
from shared.hashspec import Algorithm, SpecId, mmh3_key_id
from shared.settings import KafkaSettings, Topics
from trainer.base import read_base
from trainer.checkpoint import Checkpoint
from trainer.deltas import Ledger, decode_delta
from trainer.launch import load_latest, produce_synthetic, start_trainer, synthetic_frames, wait_for

BITS = 18
SPEC = SpecId(Algorithm.MMH3_PUBLIC, BITS, False, mmh3_key_id(0))
PARTITIONS = 6
SYNC_RECORDS = "2500"


class Instances:
    """Trainer instances of one group, each ``python -m trainer --sync-deltas`` with its own dir."""

    def __init__(self, ks: KafkaSettings, root: Path, *extra: str, publish: frozenset[int] = frozenset()) -> None:
        self.ks, self.root, self.extra, self.publish = ks, root, extra, publish
        self.procs: dict[int, subprocess.Popen] = {}

    def args(self, i: int) -> list[str]:
        ks = self.ks
        return ["--bootstrap", ks.bootstrap, "--topic-prefix", ks.topics.prefix, "--group",
                f"g-{ks.topics.prefix}", "--workers", "1", "--bits", str(BITS), "--checkpoint-dir",
                str(self.dir(i)), "--session-timeout-ms", "6000", "--report-seconds", "5",
                *([] if i in self.publish else ["--no-publish"]), "--sync-deltas", "--sync-seconds", "0.5", "--checkpoint-seconds", "1",
                "--instance-id", f"inst{i}", "--algorithm", SPEC.algorithm.name.lower(),
                "--key-id", SPEC.key_id.hex(), *self.extra]  # the spec, as in production: an
        # instance that gets its partitions handed over fully learned never sees a frame to adopt
        # it from, and the model publisher needs it

    def dir(self, i: int) -> Path:
        return self.root / f"ck{i}"

    def start(self, i: int) -> None:
        self.procs[i] = start_trainer(self.args(i), log_path=self.root / f"inst{i}.log")

    def snapshot(self, i: int) -> Checkpoint | None:
        try:
            return load_latest(self.dir(i))
        except (OSError, ValueError, KeyError):
            return None

    def global_records(self, i: int) -> int:
        """Records in the accepted deltas this instance's newest snapshot has read."""
        s = self.snapshot(i)
        return -1 if s is None or s.sync is None else int(s.sync["ledger"]["records"])

    def wait_all(self, n: int, timeout: float) -> None:
        """All records merged, then every instance's float16 residual flushed (exact, at its next
        idle sync): only then are all accepted cuts the same model (docs/scale-out.md)."""
        wait_for(lambda: all(self.global_records(i) == n for i in self.procs), timeout,
                 f"every instance holding {n} records")
        wait_for(self.converged, 60, "the instances' models converging", every=0.5)

    def converged(self) -> bool:
        snaps = [self.snapshot(i) for i in self.procs]
        return all(s is not None for s in snaps) and all(
            np.allclose(s.state, snaps[0].state, rtol=0, atol=1e-5) for s in snaps)

    def stop(self, timeout: float = 90) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for i, p in self.procs.items():
            try:
                assert p.wait(timeout) == 0, self.log(i)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                raise

    def kill_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)

    def log(self, i: int) -> str:
        return (self.root / f"inst{i}.log").read_text()[-4000:]

    def rollbacks(self) -> dict[int, int]:
        return {i: (self.root / f"inst{i}.log").read_text().count("rolling back") for i in self.procs}

    def group_spread(self, members: int) -> bool:
        """The group is stable with ``members`` members, each owning its share of the partitions."""
        admin = AdminClient({"bootstrap.servers": self.ks.bootstrap})
        group = f"g-{self.ks.topics.prefix}"
        try:
            desc = admin.describe_consumer_groups([group], request_timeout=5)[group].result()
        except Exception:  # noqa: BLE001 - the group does not exist until the first member joins
            return False
        owned = [len(m.assignment.topic_partitions) for m in desc.members if m.assignment]
        return (desc.state == ConsumerGroupState.STABLE and len(owned) == members
                and sum(owned) == PARTITIONS and min(owned) == PARTITIONS // members)


def make_env(bootstrap: str) -> KafkaSettings:
    ks = KafkaSettings(bootstrap=bootstrap, topics=Topics(f"t{uuid.uuid4().hex[:10]}."))
    ensure_topics(ks, {ks.topics.train: PARTITIONS, ks.topics.dlq: 1})
    return ks


def ends(ks: KafkaSettings) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": ks.bootstrap, "group.id": f"probe-{uuid.uuid4().hex}"})
    try:
        return {p: c.get_watermark_offsets(TopicPartition(ks.topics.train, p), timeout=10)[1]
                for p in range(PARTITIONS)}
    finally:
        c.close()


def audit_log(ks: KafkaSettings) -> tuple[Ledger, dict[str, int]]:
    """Re-decide the whole deltas log independently; records per instance in accepted deltas."""
    c = Consumer({"bootstrap.servers": ks.bootstrap, "group.id": f"audit-{uuid.uuid4().hex}",
                  "enable.auto.commit": False, "fetch.message.max.bytes": 16 << 20})
    tp = TopicPartition(ks.topics.deltas, 0)
    _, high = c.get_watermark_offsets(tp, timeout=10)
    c.assign([TopicPartition(ks.topics.deltas, 0, 0)])
    led, per, parts, pos = Ledger(), {}, {}, 0
    while pos < high:
        for m in c.consume(100, 5.0):
            if m.error():
                continue
            pos = m.offset() + 1
            h = {k: v.decode() for k, v in m.headers()}
            key = (h["hb.instance"], h["hb.seq"])
            parts.setdefault(key, []).append(m.value())
            i, n = map(int, h["hb.part"].split("/"))
            if i + 1 == n:
                d = decode_delta(b"".join(parts.pop(key)))
                if led.decide(d):
                    per[d.instance] = per.get(d.instance, 0) + d.records
    c.close()
    return led, per


def check_exactly_once(ks: KafkaSettings, inst: Instances,
                       n: int) -> tuple[np.ndarray, float, Ledger, dict[str, int]]:
    """The log's accepted claims tile every partition; every instance ends on the same model.
    Returns its weights and bias, the audited ledger and the records each instance contributed."""
    led, per = audit_log(ks)
    assert led.records == n and sum(per.values()) == n
    assert led.ends == ends(ks)
    snaps = [inst.snapshot(i) for i in inst.procs]
    for s in snaps:
        assert s.sync["ledger"]["records"] == n and s.offsets == led.ends
        np.testing.assert_allclose(s.state, snaps[0].state, atol=1e-5)
    return snaps[0].state[:, 0], float(snaps[0].bias[0]), led, per


def single_instance(ks: KafkaSettings, root: Path) -> tuple[np.ndarray, float]:
    """The reference: one instance (no sync) trained on the whole stream."""
    args = ["--bootstrap", ks.bootstrap, "--topic-prefix", ks.topics.prefix, "--group",
            f"solo-{ks.topics.prefix}", "--workers", "1", "--bits", str(BITS), "--checkpoint-dir",
            str(root / "solo"), "--no-publish", "--until-caught-up"]
    p = start_trainer(args, log_path=root / "solo.log")
    assert p.wait(300) == 0
    s = load_latest(root / "solo")
    return s.state[:, 0], float(s.bias[0])


def holdout_auc(w: np.ndarray, b: float, labels: np.ndarray, idx: np.ndarray, f: int) -> float:
    return auc(labels, w[idx].astype(np.float64).reshape(-1, f).sum(1) + b)


def synthetic_holdout(n: int = 50_000) -> tuple[np.ndarray, np.ndarray]:
    fr = [decode(f) for f in synthetic_frames(SPEC, n, per_frame=n, seed=99)]
    return fr[0].labels.copy(), fr[0].indices.copy()


def run_three(ks: KafkaSettings, root: Path, produce, n: int, timeout: float, *extra: str,
              joining: bool = False) -> tuple[np.ndarray, float, Ledger, dict[str, int], dict[int, int]]:
    """Three instances; the merged model, the audited ledger, records and rollbacks per instance.
    All three share the partitions before the stream starts; with ``joining`` only the first
    does, and the other two are started as the stream starts, so they join while it is learned
    (rebalances under load: the claim handover)."""
    inst = Instances(ks, root, *extra)
    first = 1 if joining else 3
    try:
        for i in range(first):
            inst.start(i)
        wait_for(lambda: all(inst.global_records(i) == 0 for i in range(first)), 90, "instances up")
        wait_for(lambda: inst.group_spread(first), 90, "the instances sharing the partitions", every=0.5)
        for i in range(first, 3):
            inst.start(i)
        produce()
        inst.wait_all(n, timeout)
        inst.stop()
        return (*check_exactly_once(ks, inst, n), inst.rollbacks())
    finally:
        inst.kill_all()


def test_three_instances_synthetic_match_one(kafka_bootstrap, tmp_path):
    ks, n = make_env(kafka_bootstrap), 300_000
    w, b, *_ = run_three(ks, tmp_path, lambda: produce_synthetic(ks, ks.topics.train, SPEC, n, per_frame=2000,
                                                                  partitions=PARTITIONS), n, 240)
    w1, b1 = single_instance(ks, tmp_path)
    y, idx = synthetic_holdout()
    merged, solo = holdout_auc(w, b, y, idx, 20), holdout_auc(w1, b1, y, idx, 20)
    print(f"synthetic {n}: merged AUC {merged:.4f}, single {solo:.4f}")
    # A short stream: each instance learns a third of it from a model up to a sync interval stale,
    # which cost up to ~0.005 AUC in repeated runs. The 0.002 bound is asserted where it is
    # set: on Adult and on the 2,000,000-record stream (below), where the staleness averages out.
    assert abs(merged - solo) <= 0.01


@pytest.mark.slow
def test_three_instances_two_million_match_one(kafka_bootstrap, tmp_path):
    ks, n = make_env(kafka_bootstrap), 2_000_000
    # two instances join while the first learns; then the three learn together, each at most
    # 2 x SYNC_RECORDS (one 5000-record frame) ahead of the log: a delta per frame
    w, b, led, per, rollbacks = run_three(
        ks, tmp_path, lambda: produce_synthetic(ks, ks.topics.train, SPEC, n, per_frame=5000,
                                                partitions=PARTITIONS), n, 900,
        "--sync-records", SYNC_RECORDS, joining=True)
    w1, b1 = single_instance(ks, tmp_path)
    y, idx = synthetic_holdout()
    merged, solo = holdout_auc(w, b, y, idx, 20), holdout_auc(w1, b1, y, idx, 20)
    shares = {i: round(r / n, 3) for i, r in sorted(per.items())}
    print(f"synthetic {n}: merged AUC {merged:.4f}, single {solo:.4f}, gap {merged - solo:+.4f}; "
          f"shares {shares}; {led.accepted} deltas accepted, {led.rejected} rejected; rollbacks {rollbacks}")
    # Genuinely shared work: once all three are in, each owns 2 of the 6 round-robin partitions,
    # ~1/3 of what is left. A rollback restarts an instance's worker, which rejoins the group
    # ~7-10 s later: before the claim handover one instance often learned nothing at all (audited
    # runs: 0%). 15% fails on that, and leaves room for the first instance learning alone until
    # the others are in (measured: it learns ~35-40%, the joiners ~30% each).
    assert min(per.get(f"inst{i}", 0) for i in range(3)) >= 0.15 * n, shares
    # Joins under load hand the claims over at the rebalance: no delta rejected, no rollback.
    assert led.rejected == 0 and not any(rollbacks.values()), (led.rejected, rollbacks)
    assert abs(merged - solo) <= 0.002


def adult_frames(per_frame: int = 500) -> tuple[list[bytes], np.ndarray, np.ndarray, int]:
    """Adult as the benchmarks hash it (mmh3, binned numerics): train frames, test labels/indices."""
    from benchmarks.accuracy import adult_features
    from benchmarks.contenders import digest_matrix, indices_from

    names, ctr, cte, ytr, yte = adult_features()
    f = len(names)
    itr, _ = indices_from(digest_matrix(ctr, names, "mmh3"), BITS, False)
    ite, _ = indices_from(digest_matrix(cte, names, "mmh3"), BITS, False)
    frames = []
    for s in range(0, ytr.shape[0], per_frame):
        lab = ytr[s:s + per_frame].astype(np.uint8)
        off = np.arange(0, lab.shape[0] * f + 1, f, dtype=np.uint32)
        frames.append(encode_train(SPEC, lab, off, itr[s * f:(s + lab.shape[0]) * f]))
    return frames, yte, ite, f


def test_three_instances_adult_match_one(kafka_bootstrap, tmp_path):
    ks = make_env(kafka_bootstrap)
    frames, yte, ite, f = adult_frames()
    n = sum(decode(x).n_records for x in frames)

    def produce() -> None:
        p = make_producer(ks)
        for i, x in enumerate(frames):
            p.produce(ks.topics.train, value=x, partition=i % PARTITIONS)
        assert p.flush(30) == 0

    w, b, *_ = run_three(ks, tmp_path, produce, n, 180)
    w1, b1 = single_instance(ks, tmp_path)
    merged, solo = holdout_auc(w, b, yte, ite, f), holdout_auc(w1, b1, yte, ite, f)
    print(f"adult {n}: merged AUC {merged:.4f}, single {solo:.4f}")
    assert abs(merged - solo) <= 0.002


def test_fourth_instance_starts_from_the_published_model(kafka_bootstrap, tmp_path):
    """A new instance (empty dir) joins after the first half of the stream: it restores the cut
    inst0 published on the models topic with its deltas position P > 0 and reads the log from
    there only; at the end all four hold the same model, every record exactly once, as good as one."""
    ks, half = make_env(kafka_bootstrap), 150_000
    n = 2 * half

    def produce(seed: int) -> None:
        produce_synthetic(ks, ks.topics.train, SPEC, half, per_frame=2000, partitions=PARTITIONS, seed=seed)

    def base_records() -> int:
        found = read_base(ks, timeout=30)
        return -1 if found is None else int(found[0]["sync"]["ledger"]["records"])

    # inst0 has the smallest id: the leader; bounded staleness as in the 2 M test (the four share
    # work under load, and unbounded deltas cost this short stream up to ~0.008 AUC)
    inst = Instances(ks, tmp_path, "--sync-records", SYNC_RECORDS, publish=frozenset({0}))
    try:
        for i in range(3):
            inst.start(i)
        wait_for(lambda: all(inst.global_records(i) == 0 for i in range(3)), 90, "instances up")
        produce(1)
        inst.wait_all(half, 180)
        wait_for(lambda: base_records() == half, 60, "a published model holding the first half", every=0.5)
        position = int(read_base(ks)[0]["sync"]["deltas_next"])
        inst.start(3)
        wait_for(lambda: inst.global_records(3) == half, 90, "the fourth instance up")
        origin = inst.snapshot(3).sync["origin"]
        assert origin["model_version"] > 0 and origin["deltas_next"] >= position > 0  # not from 0
        assert "starting from published model version" in inst.log(3)
        produce(2)
        inst.wait_all(n, 240)
        inst.stop()
        w, b, *_ = check_exactly_once(ks, inst, n)
        assert inst.snapshot(3).sync["origin"] == origin
    finally:
        inst.kill_all()
    w1, b1 = single_instance(ks, tmp_path)
    y, idx = synthetic_holdout()
    merged, solo = holdout_auc(w, b, y, idx, 20), holdout_auc(w1, b1, y, idx, 20)
    print(f"synthetic {n}, a fourth from the model at deltas offset {origin['deltas_next']}: "
          f"merged AUC {merged:.4f}, single {solo:.4f}")
    assert abs(merged - solo) <= 0.01  # a short stream, as in the three-instance test above
