"""Dead letters under attack: 10,000 corrupted frames per topic among valid ones.

Random bytes, bit-flipped and truncated valid frames, frames of a foreign key, of another bit
width and of the wrong kind go into the train topic and into the score topic. The real trainer
(subprocess, ``--until-caught-up``) and the real scorer service must survive all of it, learn
exactly the valid records, and dead-letter every bad frame with the reason that decoding it
gives. A mutated frame can still decode validly (a flipped label bit, a flipped index bit below
``2^bits``), so the expected outcome of every injected message is found by decoding it here.
"""
from __future__ import annotations

import io
import json
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from hashbridge import dlq as dlq_cli
from scorer.metrics import ScorerMetrics
from scorer.service import ScorerService
from scorer.settings import ScorerSettings
from shared.clients import ensure_pipeline_topics, make_consumer, make_producer
from shared.deadletter import REASON, SERVICE, SOURCE_TOPIC, headers_dict
from shared.errors import FrameError
from shared.frames import Kind, decode, encode_score, encode_train, require_spec
from shared.hashspec import Algorithm, SpecId, key_id
from shared.settings import KafkaSettings, Topics
from trainer.launch import snapshot_records, start_trainer

BITS = 18
KEY = b"k" * 32
SPEC = SpecId(Algorithm.BLAKE2B_KEYED, BITS, False, key_id(KEY))
FOREIGN = SpecId(Algorithm.BLAKE2B_KEYED, BITS, False, key_id(b"f" * 32))
NARROW = SpecId(Algorithm.BLAKE2B_KEYED, BITS - 2, False, key_id(KEY))
N_BAD = 10_000
N_VALID = 400
PARTITIONS = 4
DEADLINE = 420.0


def valid_frame(rng: np.random.Generator, kind: Kind, spec: SpecId = SPEC) -> bytes:
    n = int(rng.integers(1, 40))
    lengths = rng.integers(1, 14, n)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.uint32)
    indices = rng.integers(0, 1 << spec.bits, int(offsets[-1])).astype(np.uint32)
    if kind is Kind.TRAIN:
        return encode_train(spec, rng.integers(0, 2, n).astype(np.uint8), offsets, indices)
    return encode_score(spec, rng.integers(0, 2**63, n).astype(np.uint64), offsets, indices)


def corrupt(rng: np.random.Generator, kind: Kind, i: int) -> bytes:
    """One of six kinds of bad input, in rotation."""
    other = Kind.SCORE if kind is Kind.TRAIN else Kind.TRAIN
    style = i % 6
    if style == 0:
        return rng.bytes(int(rng.integers(0, 300)))
    if style == 1:  # bit flips anywhere
        buf = bytearray(valid_frame(rng, kind))
        for _ in range(int(rng.integers(1, 4))):
            pos = int(rng.integers(0, len(buf) * 8))
            buf[pos // 8] ^= 1 << (pos % 8)
        return bytes(buf)
    if style == 2:  # truncated (or one byte too many)
        buf = valid_frame(rng, kind)
        return buf[:int(rng.integers(0, len(buf)))] if rng.random() < 0.9 else buf + b"\0"
    if style == 3:
        return valid_frame(rng, kind, FOREIGN)
    if style == 4:
        return valid_frame(rng, kind, NARROW)
    return valid_frame(rng, other)


def outcome(value: bytes, kind: Kind) -> tuple[str, int]:
    """(reason, 0) for a frame the services must refuse; ("ok", records) for one they accept."""
    try:
        frame = decode(value, expect=kind)
        require_spec(frame, SPEC)
    except FrameError as exc:
        return exc.reason, 0
    return "ok", frame.n_records


def inject(ks: KafkaSettings, topic: str, kind: Kind, seed: int) -> dict[bytes, tuple[str, int]]:
    """Valid frames first and last, bad ones between; returns key -> expected outcome."""
    rng = np.random.default_rng(seed)
    msgs: list[tuple[bytes, bytes]] = [(b"ok-%d" % i, valid_frame(rng, kind)) for i in range(N_VALID)]
    msgs += [(b"bad-%d" % i, corrupt(rng, kind, i)) for i in range(N_BAD)]
    order = rng.permutation(len(msgs))
    producer = make_producer(ks, **{"linger.ms": 20})
    expected = {}
    for j, pos in enumerate(order.tolist()):
        key, value = msgs[pos]
        expected[key] = outcome(value, kind)
        while True:
            try:
                producer.produce(topic, key=key, value=value, partition=j % PARTITIONS)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(60) == 0
    return expected


def read_topic(ks: KafkaSettings, topic: str) -> list:
    """Every message of ``topic`` up to its end offsets now."""
    c = make_consumer(ks, f"check-{uuid.uuid4().hex}")
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
        want = {p: e for p, e in ends.items() if e > 0}
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in want])
        out: list = []
        deadline = time.monotonic() + 120
        while want and time.monotonic() < deadline:
            for m in c.consume(2000, 0.5):
                if m.error() is None:
                    out.append(m)
                    if m.offset() + 1 >= want.get(m.partition(), 0):
                        want.pop(m.partition(), None)
        assert not want, f"could not read {topic} to its end"
        return out
    finally:
        c.close()


def test_corrupted_frames_are_dead_lettered_with_their_reason(kafka_bootstrap: str, tmp_path: Path) -> None:
    ks = KafkaSettings(bootstrap=kafka_bootstrap, topics=Topics(f"dlqx{uuid.uuid4().hex[:10]}."))
    ensure_pipeline_topics(ks, partitions=PARTITIONS)
    t = ks.topics
    train_expected = inject(ks, t.train, Kind.TRAIN, seed=1)
    score_expected = inject(ks, t.score, Kind.SCORE, seed=2)
    valid_train = sum(n for r, n in train_expected.values() if r == "ok")
    bad_train = Counter(r for r, _ in train_expected.values() if r != "ok")
    bad_score = Counter(r for r, _ in score_expected.values() if r != "ok")
    print(f"\ninjected train: {len(train_expected)} frames, {valid_train} valid records, bad by reason "
          f"{dict(bad_train)}\ninjected score: {len(score_expected)} frames, bad by reason {dict(bad_score)}")
    assert sum(bad_train.values()) >= N_BAD * 0.9 and sum(bad_score.values()) >= N_BAD * 0.9

    # the trainer: must not die, must learn exactly the valid records, then publish its model
    ckpt = tmp_path / "ckpt"
    log_path = tmp_path / "trainer.log"
    proc = start_trainer(["--bootstrap", ks.bootstrap, "--topic-prefix", t.prefix, "--group", f"g-{t.prefix}",
                          "--workers", "2", "--bits", str(BITS), "--key-id", SPEC.key_id_hex,
                          "--checkpoint-dir", str(ckpt), "--until-caught-up", "--report-seconds", "5"],
                         log_path=log_path)
    try:
        rc = proc.wait(DEADLINE)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    log_text = log_path.read_text(errors="replace")
    assert rc == 0, log_text[-3000:]
    assert "Traceback" not in log_text
    learned = snapshot_records(ckpt)
    print(f"trainer learned {learned} records (valid injected: {valid_train})")
    assert learned == valid_train

    # the scorer: answers every request (prediction or error reply), dead-letters the bad ones
    settings = ScorerSettings(kafka=ks, group=f"s-{t.prefix}", model_wait=60.0, mode="throughput")
    deadline = time.monotonic() + DEADLINE
    with ScorerService(settings, ScorerMetrics()) as svc:
        while True:
            svc.run(timeout=3.0)
            parts = [TopicPartition(t.score, p) for p in range(PARTITIONS)]
            committed = svc._consumer.committed(parts, timeout=10)
            ends = [svc._consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in parts]
            if [tp.offset for tp in committed] == ends:
                break
            assert time.monotonic() < deadline, f"scorer stuck at {committed} of {ends}"
    replies = read_topic(ks, t.predictions)
    assert len(replies) == len(score_expected)
    for m in replies:
        reply = decode(m.value())
        want, n = score_expected[m.key()]
        assert (reply.kind is Kind.PREDICTION) == (want == "ok"), (m.key(), want)
        if want == "ok":
            assert reply.n_records == n and reply.spec == SPEC
        else:
            assert reply.reason == want

    # every bad frame of both topics is in the DLQ once, with the reason decoding gives
    dead = read_topic(ks, t.dlq)
    got: dict[tuple[str, bytes], str] = {}
    for m in dead:
        h = headers_dict(m.headers())
        k = (h[SOURCE_TOPIC], m.key())
        assert k not in got, f"dead-lettered twice: {k}"
        got[k] = h[REASON]
        assert h[SERVICE] in ("trainer", "scorer")
    want_dead = {(t.train, k): r for k, (r, _) in train_expected.items() if r != "ok"}
    want_dead |= {(t.score, k): r for k, (r, _) in score_expected.items() if r != "ok"}
    per_reason_got = Counter(got.values())
    per_reason_want = Counter(want_dead.values())
    print(f"dead letters: {len(got)} (expected {len(want_dead)}); by reason {dict(per_reason_got)}")
    assert per_reason_got == per_reason_want
    assert got == want_dead

    # `hashbridge dlq` lists them with the same counts
    out = io.StringIO()
    assert dlq_cli.main(["--bootstrap", ks.bootstrap, "--prefix", t.prefix, "--json", "--limit", "5",
                         "--timeout", "120"], out=out) == 0
    listing = json.loads(out.getvalue())
    assert listing["total"] == len(want_dead)
    assert listing["counts"] == dict(per_reason_want)
    assert len(listing["records"]) == 5
