"""Scorer benchmark: bulk scoring throughput (in memory and from a topic) and request latency.

Bulk: frames of 10,000 records x 20 indices against a 2^20 model; ``serve`` alone (decode, kernel,
encode) and the whole scorer loop reading the frames from a topic and writing replies.
Latency: a scorer subprocess in latency mode; a client sends single-record frames at a fixed rate
and times each reply by its request id (send to reply received, through the broker both ways).
Needs a broker: ``HASHBRIDGE_BOOTSTRAP`` (default localhost:19092).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

import numpy as np

from benchmarks.common import rate, timed, write_result
from scorer.metrics import ScorerMetrics
from scorer.scoring import serve, warm_up
from scorer.service import ScorerService
from scorer.settings import ScorerSettings
from shared.clients import ensure_pipeline_topics, make_consumer, make_producer
from shared.frames import decode, encode_score
from shared.hashspec import Algorithm, SpecId, key_id
from shared.models import ModelPublisher, ModelSnapshot
from shared.settings import KafkaSettings, Topics

SPEC = SpecId(Algorithm.BLAKE2B_KEYED, 20, False, key_id(b"b" * 16))
PER_FRAME, PER_ROW = 10_000, 20
GOAL_BULK = 5_000_000
GOAL_P99_MS = 20.0


def _model() -> ModelSnapshot:
    w = np.random.default_rng(0).normal(scale=0.1, size=1 << SPEC.bits).astype(np.float32)
    return ModelSnapshot(1, SPEC, w, -1.0, 0, time.time())


def _frames(n_frames: int) -> list[bytes]:
    rng = np.random.default_rng(1)
    offsets = np.arange(0, PER_FRAME * PER_ROW + 1, PER_ROW, dtype=np.uint32)
    out = []
    for f in range(n_frames):
        ids = np.arange(f * PER_FRAME, (f + 1) * PER_FRAME, dtype=np.uint64)
        out.append(encode_score(SPEC, ids, offsets, rng.integers(0, 1 << SPEC.bits, PER_FRAME * PER_ROW,
                                                                  dtype=np.uint32)))
    return out


def _kafka() -> KafkaSettings:
    return KafkaSettings(bootstrap=os.environ.get("HASHBRIDGE_BOOTSTRAP", "localhost:19092"),
                         topics=Topics(prefix=f"bench{uuid.uuid4().hex[:10]}."))


def bench_memory(frames: list[bytes], model: ModelSnapshot, repeats: int) -> dict[str, Any]:
    warm_up()
    t = timed(lambda: [serve(f, model) for f in frames], repeats)
    return rate(len(frames) * PER_FRAME, t)


def bench_topic(frames: list[bytes], model: ModelSnapshot, repeats: int) -> dict[str, Any]:
    """Each repetition: a fresh topic set, a scorer that already joined, then every frame at once."""
    n = len(frames) * PER_FRAME
    walls = []
    for _ in range(repeats):
        kafka = _setup(model)
        settings = ScorerSettings(kafka=kafka, group=f"bench-{uuid.uuid4().hex}", mode="throughput")
        with ScorerService(settings, ScorerMetrics()) as svc:
            deadline = time.monotonic() + 60
            while not svc._consumer.assignment() and time.monotonic() < deadline:
                svc.run(timeout=0.5)  # join the group and load the model, untimed
            producer = make_producer(kafka)
            for i, f in enumerate(frames):
                producer.produce(kafka.topics.score, key=b"%d" % i, value=f)
            producer.flush(120)
            t0 = time.perf_counter()
            served = svc.run(max_records=n, timeout=300)
            svc._commit()  # the figure includes flushing every reply
            walls.append(time.perf_counter() - t0)
            assert served == n, served
    return {"median": n / statistics.median(walls), "min": n / max(walls), "max": n / min(walls),
            "seconds": walls}


class _Replies(threading.Thread):
    """Records the arrival time of each reply by request id (confluent releases the GIL in consume)."""

    def __init__(self, kafka: KafkaSettings, n: int) -> None:
        super().__init__(daemon=True)
        self.c = make_consumer(kafka, f"lat-{uuid.uuid4().hex}", **{"fetch.wait.max.ms": 1,
                                                                   "auto.offset.reset": "latest"})
        self.c.subscribe([kafka.topics.predictions])
        self.arrived = np.full(n, np.nan)
        self.assigned = threading.Event()
        self.done = False

    def run(self) -> None:
        while not self.done:
            msgs = self.c.consume(1000, 0.05)
            if self.c.assignment():
                self.assigned.set()
            now = time.perf_counter()
            for m in msgs:
                if m.error() is None:
                    rid = decode(m.value()).request_ids
                    self.arrived[rid.astype(np.int64)] = now
        self.c.close()


def bench_latency(kafka: KafkaSettings, rates: list[int], seconds: float, repeats: int) -> dict[str, Any]:
    env = {**os.environ, "HASHBRIDGE_BOOTSTRAP": kafka.bootstrap}
    proc = subprocess.Popen([sys.executable, "-m", "scorer", "--prefix", kafka.topics.prefix,
                             "--group", f"lat-{uuid.uuid4().hex}", "--mode", "latency"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = np.random.default_rng(2).integers(0, 1 << SPEC.bits, (1, PER_ROW)).astype(np.uint32)
    offsets = np.array([0, PER_ROW], np.uint32)
    out: dict[str, Any] = {}
    try:
        producer = make_producer(kafka, **{"linger.ms": 0})
        total = 1 + sum(int(r * seconds) for r in rates) * repeats + 200
        replies = _Replies(kafka, total)
        replies.start()
        replies.assigned.wait(60)
        next_id = 0

        def send(rid: int) -> None:
            producer.produce(kafka.topics.score, key=b"%d" % rid,
                             value=encode_score(SPEC, np.array([rid], np.uint64), offsets, rows[0]))
            producer.poll(0)

        deadline = time.monotonic() + 90  # warm-up: until the scorer answers at all
        while time.monotonic() < deadline and np.isnan(replies.arrived[:max(1, next_id)]).all():
            if next_id < 200:
                send(next_id)
                next_id += 1
            time.sleep(0.05)  # pacing the warm-up requests
        for r in rates:
            p50s, p99s, lost = [], [], 0
            for _ in range(repeats):
                n = int(r * seconds)
                ids = np.arange(next_id, next_id + n)
                sent = np.empty(n)
                t0 = time.perf_counter()
                for k in range(n):
                    due = t0 + k / r
                    while (now := time.perf_counter()) < due:
                        if due - now > 0.002:
                            time.sleep(0.0005)  # pacing the open-loop sender
                    sent[k] = time.perf_counter()
                    send(int(ids[k]))
                producer.flush(10)
                wait_until = time.monotonic() + 15
                while np.isnan(replies.arrived[ids]).any() and time.monotonic() < wait_until:
                    time.sleep(0.01)  # waiting for the last replies under a deadline
                lat = (replies.arrived[ids] - sent) * 1000.0
                lost += int(np.isnan(lat).sum())
                lat = lat[~np.isnan(lat)]
                p50s.append(float(np.percentile(lat, 50)))
                p99s.append(float(np.percentile(lat, 99)))
                next_id += n
            out[f"{r}/s"] = {"p50_ms": {"median": statistics.median(p50s), "min": min(p50s), "max": max(p50s)},
                             "p99_ms": {"median": statistics.median(p99s), "min": min(p99s), "max": max(p99s)},
                             "unanswered": lost}
        replies.done = True
        replies.join(10)
    finally:
        proc.terminate()
        proc.wait(30)
    return out


def _setup(model: ModelSnapshot) -> KafkaSettings:
    kafka = _kafka()
    ensure_pipeline_topics(kafka, partitions=4)
    pub = ModelPublisher(kafka)
    pub.publish(model)
    pub.close()
    return kafka


def run(quick: bool = False) -> dict:
    model = _model()
    frames = _frames(20 if quick else 100)
    repeats = 2 if quick else 3
    figures: dict[str, Any] = {
        "records_per_frame": PER_FRAME, "indices_per_record": PER_ROW, "bits": SPEC.bits,
        "bulk_in_memory_predictions_per_s": bench_memory(frames, model, repeats),
        "bulk_from_topic_predictions_per_s": bench_topic(frames, model, repeats),
        "latency": bench_latency(_setup(model), [1000, 10000], 2.0 if quick else 5.0, repeats),
    }
    bulk = figures["bulk_from_topic_predictions_per_s"]["median"]
    mem = figures["bulk_in_memory_predictions_per_s"]["median"]
    p99 = figures["latency"]["1000/s"]["p99_ms"]["median"]
    notes = [
        f"bulk scoring from a topic: {bulk:,.0f} predictions/s (goal {GOAL_BULK:,}): "
        f"{'reached' if bulk >= GOAL_BULK else 'missed'}; serve() alone in memory: {mem:,.0f}/s",
        f"single-record latency at 1,000/s: p99 {p99:.1f} ms (goal < {GOAL_P99_MS:.0f} ms): "
        f"{'reached' if p99 < GOAL_P99_MS else 'missed'}",
        "one scorer process, one Python client process, broker on the same 2-core machine, "
        "shared with other work; latency = client send to client receipt of the reply",
    ]
    write_result("scorer", figures, notes)
    return {"figures": figures, "notes": notes}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    res = run(quick=ap.parse_args().quick)
    for note in res["notes"]:
        print(note)
