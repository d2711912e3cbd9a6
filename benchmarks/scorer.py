"""Scorer benchmark: bulk scoring throughput (in memory and from a topic) and request latency.

Bulk: frames of 32,768 records x 20 indices against a 2^20 model; ``serve`` alone (decode, kernel,
encode) and the whole scorer loop (throughput mode) reading the frames from a topic and writing
replies, with where its time goes (a cProfile of the last repetition) and predictions per CPU
second of the scorer process (all its threads, librdkafka's included).
Latency: a scorer subprocess in latency mode; an open-loop client sends single-record frames on a
fixed schedule (whether or not replies came) and times each reply by its request id (client
send to client receipt, through the broker both ways).
Needs a broker: ``HASHBRIDGE_BOOTSTRAP`` (default localhost:19092).
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import resource
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
from shared.allocator import reuse_large_buffers
from scorer.settings import ScorerSettings
from shared.clients import ensure_pipeline_topics, make_consumer, make_producer
from shared.frames import decode, encode_prediction, encode_score
from shared.hashspec import Algorithm, SpecId, key_id
from shared.models import ModelPublisher, ModelSnapshot
from shared.settings import KafkaSettings, Topics

SPEC = SpecId(Algorithm.BLAKE2B_KEYED, 20, False, key_id(b"b" * 16))
PER_FRAME, PER_ROW = 32_768, 20
GOAL_BULK = 5_000_000
GOAL_P99_MS = 20.0
WARM_SECONDS = 3.0  # unmeasured requests at the first rate before the latency is timed
LATENCY_SECONDS = {1000: 15.0, 10000: 5.0}  # each timed window, per request rate


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


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def bench_memory(frames: list[bytes], model: ModelSnapshot, repeats: int) -> dict[str, Any]:
    warm_up()
    cpus: list[float] = []

    def once() -> None:
        c0 = _cpu()
        for f in frames:
            serve(f, model)
        cpus.append(_cpu() - c0)

    out = rate(len(frames) * PER_FRAME, timed(once, repeats))
    out["per_cpu_second"] = len(frames) * PER_FRAME / statistics.median(cpus)
    return out


# where the loop's time goes, from cProfile's own time of these calls (cProfile sees the loop's
# thread only: with serve threads, "kernel" is ~0 and "serve threads" is the loop waiting for them)
_SPLIT = {"consume": ("method 'consume' of", "method 'poll' of 'cimpl.Consumer"),
          "kernel": ("(predict_csr)",), "serve threads": ("method 'acquire' of '_thread.lock'",),
          "decode": ("frames.py", "(decode)"),
          "encode": ("(prediction_frame)", "method 'tobytes'", "method 'join'"),
          "produce": ("method 'produce' of",), "flush": ("method 'flush' of",),
          "commit": ("method 'commit' of",)}


def _split(prof: cProfile.Profile) -> dict[str, float]:
    split = dict.fromkeys(_SPLIT, 0.0)
    for (file, line, name), (_cc, _nc, tt, _ct, _callers) in pstats.Stats(prof).stats.items():
        label = f"{file}:{line}({name})" if file != "~" else name
        for part, needles in _SPLIT.items():
            if any(n in label for n in needles):
                split[part] += tt
                break
    return split


def _topic_run(frames: list[bytes], model: ModelSnapshot, rounds: int, compression: str, serve_threads: int,
               profile: bool) -> tuple[float, float, dict[str, float] | None]:
    """One repetition: a fresh topic set, a scorer that already joined, then every frame at once,
    ``rounds`` times over; returns (wall s, CPU s, the loop's split if ``profile``)."""
    n = len(frames) * PER_FRAME * rounds
    kafka = _setup(model)
    settings = ScorerSettings(kafka=kafka, group=f"bench-{uuid.uuid4().hex}", mode="throughput",
                              serve_threads=serve_threads)
    with ScorerService(settings, ScorerMetrics()) as svc:
        deadline = time.monotonic() + 60
        while not svc._consumer.assignment() and time.monotonic() < deadline:
            svc.run(timeout=0.5)  # join the group and load the model, untimed
        producer = make_producer(kafka, **{"compression.type": compression})
        for i, f in enumerate(frames * rounds):
            while True:
                try:
                    producer.produce(kafka.topics.score, key=b"%d" % i, value=f)
                    break
                except BufferError:
                    producer.poll(0.1)
        producer.flush(120)
        prof = cProfile.Profile() if profile else None
        c0, t0 = _cpu(), time.perf_counter()
        if prof:
            prof.enable()
        served = svc.run(max_records=n, timeout=300)
        svc._commit()  # the figure includes flushing every reply
        if prof:
            prof.disable()
        wall, cpu = time.perf_counter() - t0, _cpu() - c0
        assert served == n, served
    if prof is None:
        return wall, cpu, None
    split = {k: round(v, 4) for k, v in _split(prof).items()}
    split["other"] = round(max(0.0, wall - sum(split.values())), 4)
    return wall, cpu, split


def bench_topic(frames: list[bytes], model: ModelSnapshot, repeats: int, variants: dict[str, dict[str, Any]],
                rounds: int = 1) -> dict[str, dict[str, Any]]:
    """Bulk scoring from a topic, for each variant (``compression``: the request producer's, lz4
    by default as in the producer service; ``serve_threads``: 0 is throughput mode's default),
    one repetition of each per round so that the shared host's changes of speed hit every
    variant alike. Each pass over the frames is ``rounds`` times the 40 frames: a window of
    ~0.2 s, as 40 frames gave, was halved by a single stall of the shared host. The allocator is
    set as ``python -m scorer`` sets it (shared/allocator.py)."""
    reuse_large_buffers()
    n = len(frames) * PER_FRAME * rounds
    runs: dict[str, list[tuple[float, float, dict[str, float] | None]]] = {name: [] for name in variants}
    for rep in range(repeats):
        for name, kw in variants.items():
            runs[name].append(_topic_run(frames, model, rounds, kw.get("compression", "lz4"),
                                         kw.get("serve_threads", 0), profile=rep == repeats - 1))
    out = {}
    for name, rs in runs.items():
        walls, cpus = [w for w, _, _ in rs], [c for _, c, _ in rs]
        out[name] = {"median": n / statistics.median(walls), "min": n / max(walls), "max": n / min(walls),
                     "seconds": walls, "cpu_seconds": cpus, "per_cpu_second": n / statistics.median(cpus),
                     "split_seconds_last_run": rs[-1][2]}
    return out


class _Replies(threading.Thread):
    """Records the arrival time of each reply by request id (confluent releases the GIL in consume)."""

    def __init__(self, kafka: KafkaSettings, n: int) -> None:
        super().__init__(daemon=True)
        # fetch.min.bytes=1: the broker answers at the first reply, the wait only bounds an empty
        # fetch (an idle consumer at 2 ms cost the broker ~30% of a core in empty fetches, docs/scorer.md)
        self.c = make_consumer(kafka, f"lat-{uuid.uuid4().hex}", **{
            "fetch.wait.max.ms": 100, "fetch.min.bytes": 1, "fetch.queue.backoff.ms": 1,
            "socket.nagle.disable": True, "auto.offset.reset": "latest"})
        self.c.subscribe([kafka.topics.predictions])
        self.arrived = np.full(n, np.nan)
        self.assigned = threading.Event()
        self.done = False

    def run(self) -> None:
        while not self.done:
            # consume(n, t) would hold replies back until n arrived: take what is queued, else
            # wait in poll(), which returns at the first message
            msgs = self.c.consume(1000, 0)
            if not msgs:
                first = self.c.poll(0.05)
                msgs = [first] if first is not None else []
            if self.c.assignment():
                self.assigned.set()
            now = time.perf_counter()
            for m in msgs:
                if m.error() is None:
                    v = m.value()
                    # the client's own cost per reply kept small (a full decode is ~25 us, and
                    # this thread shares the GIL with the paced sender): single-record prediction
                    # frames carry the request id at byte 40; anything else is decoded
                    if len(v) == 56 and v[5] == 3:
                        self.arrived[int.from_bytes(v[40:48], "little")] = now
                    else:
                        self.arrived[decode(v).request_ids.astype(np.int64)] = now
        self.c.close()


def _secs(seconds: float | dict[int, float], rate: int) -> float:
    return seconds[rate] if isinstance(seconds, dict) else seconds


def _paced(send: Any, replies: _Replies, rates: list[int], seconds: float | dict[int, float], repeats: int,
           next_id: int) -> tuple[dict[str, Any], int]:
    """Open-loop requests at each rate; p50/p99 of send-to-reply-arrival (ms) per repetition."""
    out: dict[str, Any] = {}
    for r in rates:
        p50s, p99s, lost = [], [], 0
        for _ in range(repeats):
            n = int(r * _secs(seconds, r))
            ids = np.arange(next_id, next_id + n)
            sent = np.empty(n)
            t0 = time.perf_counter()
            for k in range(n):
                due = t0 + k / r
                if (ahead := due - time.perf_counter()) > 0:
                    time.sleep(ahead)  # open-loop pacing; no spinning, the CPU is shared
                sent[k] = time.perf_counter()
                send(int(ids[k]))
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
    return out, next_id


def _latency_client(kafka: KafkaSettings, total: int) -> tuple[Any, _Replies]:
    producer = make_producer(kafka, **{"linger.ms": 0, "batch.num.messages": 64,
                                       "compression.type": "none", "socket.nagle.disable": True})
    replies = _Replies(kafka, total)
    replies.start()
    replies.assigned.wait(60)
    return producer, replies


def bench_latency(kafka: KafkaSettings, rates: list[int], seconds: float | dict[int, float],
                  repeats: int) -> dict[str, Any]:
    env = {**os.environ, "HASHBRIDGE_BOOTSTRAP": kafka.bootstrap}
    proc = subprocess.Popen([sys.executable, "-m", "scorer", "--prefix", kafka.topics.prefix,
                             "--group", f"lat-{uuid.uuid4().hex}", "--mode", "latency"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = np.random.default_rng(2).integers(0, 1 << SPEC.bits, (1, PER_ROW)).astype(np.uint32)
    offsets = np.array([0, PER_ROW], np.uint32)
    try:
        warm = int(rates[0] * WARM_SECONDS)
        producer, replies = _latency_client(kafka, 1 + sum(int(r * _secs(seconds, r)) for r in rates) * repeats + 200 + warm)
        # one template frame; each send patches in its request id (bytes 40-48) and produces it
        template = encode_score(SPEC, np.array([0], np.uint64), offsets, rows[0])

        def send(rid: int) -> None:
            producer.produce(kafka.topics.score, key=b"%d" % rid,
                             value=template[:40] + rid.to_bytes(8, "little") + template[48:])
            producer.poll(0)

        next_id = 0
        deadline = time.monotonic() + 90  # warm-up: until the scorer answers at all
        while time.monotonic() < deadline and np.isnan(replies.arrived[:max(1, next_id)]).all():
            if next_id < 200:
                send(next_id)
                next_id += 1
            time.sleep(0.05)  # pacing the warm-up requests
        # then the first rate for a while, unmeasured: the scorer's and the broker's paths for
        # these topics run warm before the clock (first replies pay for page faults and the JIT)
        _, next_id = _paced(send, replies, rates[:1], WARM_SECONDS, 1, next_id)
        out, _ = _paced(send, replies, rates, seconds, repeats, next_id)
        replies.done = True
        replies.join(10)
    finally:
        proc.terminate()
        proc.wait(30)
    return out


def bench_round_trip(kafka: KafkaSettings, rates: list[int], seconds: float | dict[int, float],
                     repeats: int) -> dict[str, Any]:
    """The floor under the scorer's latency: the same client and consumer settings, but the client
    writes single-record reply frames straight to the predictions topic and reads them back (one
    trip through the broker where a scored request makes two, plus the scorer)."""
    ensure_pipeline_topics(kafka)
    measured = sum(int(r * _secs(seconds, r)) for r in rates) * repeats
    producer, replies = _latency_client(kafka, measured + 300)
    template = encode_prediction(SPEC, np.array([0], np.uint64), np.array([0.5]), 1)

    def send(rid: int) -> None:
        producer.produce(kafka.topics.predictions, key=b"%d" % rid,
                         value=template[:40] + rid.to_bytes(8, "little") + template[48:])
        producer.poll(0)

    for i in range(200):  # warm-up, not measured
        send(measured + i)
        time.sleep(0.005)
    out, _ = _paced(send, replies, rates, seconds, repeats, 0)
    replies.done = True
    replies.join(10)
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
    frames = _frames(10 if quick else 40)
    repeats = 2 if quick else 3
    figures: dict[str, Any] = {
        "records_per_frame": PER_FRAME, "indices_per_record": PER_ROW, "bits": SPEC.bits,
        "bulk_in_memory_predictions_per_s": bench_memory(frames, model, repeats),
        **bench_topic(frames, model, repeats, {
            "bulk_from_topic_predictions_per_s": {},
            "bulk_from_topic_uncompressed_requests_predictions_per_s": {"compression": "none"},
            "bulk_from_topic_one_serve_thread_predictions_per_s": {"serve_threads": 1},
        }, rounds=1 if quick else 6),
        # 15 s windows at 1,000/s: in a 5 s window one 50 ms stall of the shared host alone set the
        # p99 (50 of its 5,000 requests); over 15,000 requests it must last 150 ms to do so
        "latency": bench_latency(_setup(model), [1000, 10000], 2.0 if quick else LATENCY_SECONDS, repeats),
        "kafka_round_trip_no_scorer": bench_round_trip(_kafka(), [1000], 2.0 if quick else LATENCY_SECONDS,
                                                       repeats),
    }
    bulk = figures["bulk_from_topic_predictions_per_s"]["median"]
    mem = figures["bulk_in_memory_predictions_per_s"]["median"]
    p99 = figures["latency"]["1000/s"]["p99_ms"]["median"]
    notes = [
        f"bulk scoring from a topic: {bulk:,.0f} predictions/s (goal {GOAL_BULK:,}): "
        f"{'reached' if bulk >= GOAL_BULK else 'missed'}; per CPU second of the scorer process: "
        f"{figures['bulk_from_topic_predictions_per_s']['per_cpu_second']:,.0f}; "
        f"serve() alone in memory: {mem:,.0f}/s; with uncompressed request frames: "
        f"{figures['bulk_from_topic_uncompressed_requests_predictions_per_s']['median']:,.0f}/s; "
        f"with one serve thread instead of throughput mode's {ScorerSettings(mode='throughput').serve_threads}: "
        f"{figures['bulk_from_topic_one_serve_thread_predictions_per_s']['median']:,.0f}/s",
        f"single-record latency at 1,000/s: p99 {p99:.1f} ms (goal < {GOAL_P99_MS:.0f} ms): "
        f"{'reached' if p99 < GOAL_P99_MS else 'missed'}; p50 "
        f"{figures['latency']['1000/s']['p50_ms']['median']:.1f} ms",
        "at 10,000/s: p50 {:.1f} ms, p99 {:.1f} ms".format(
            figures["latency"]["10000/s"]["p50_ms"]["median"], figures["latency"]["10000/s"]["p99_ms"]["median"]),
        "the floor, one trip through the broker and back with no scorer (same client settings) at "
        "1,000/s: p50 {:.1f} ms, p99 {:.1f} ms; a scored request makes two such trips".format(
            figures["kafka_round_trip_no_scorer"]["1000/s"]["p50_ms"]["median"],
            figures["kafka_round_trip_no_scorer"]["1000/s"]["p99_ms"]["median"]),
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
