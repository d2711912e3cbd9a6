"""The scorer's loop: consume score requests, reply with predictions, commit after the flush.

Delivery is at-least-once: input offsets are committed only after every reply (and dead letter)
produced for them was acknowledged, so a scorer killed in between leaves its requests to be
answered again by whoever takes over the partition. The interval commit does not flush: each
batch counts its own acknowledgements, and only the leading run of fully acknowledged batches is
committed, so the loop never stops serving to wait for the broker. The model is swapped between two batches,
never during one, and each reply names the version that scored it.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any, Callable

from confluent_kafka import KafkaError as CKError, KafkaException, TopicPartition

from scorer.heap import keep_freed_memory
from scorer.metrics import ScorerMetrics, observe_many
from scorer.scoring import serve_many, warm_up
from scorer.settings import HEAP_KEEP_BYTES, ScorerSettings
from shared.clients import ensure_pipeline_topics, make_consumer, make_producer
from shared.deadletter import send_dead_letter
from shared.errors import KafkaError
from shared.models import ModelSnapshot, ModelWatcher

log = logging.getLogger(__name__)
SERVICE = "scorer"


class _Batch:
    """One served batch: the input offsets it answered, and how many of the messages it produced
    (replies, dead letters) the broker has yet to acknowledge; ``delivered`` counts them down."""

    __slots__ = ("offsets", "left", "_on_error")

    def __init__(self, on_error: Callable[[Any], None]) -> None:
        self.offsets: dict[tuple[str, int], int] = {}  # (topic, partition) -> next offset to commit
        self.left = 0
        self._on_error = on_error

    def delivered(self, err: Any, _msg: Any) -> None:
        self.left -= 1
        if err is not None:
            self._on_error(err)


class ScorerService:
    """One scorer process: a consumer-group member on the score topic. Use as a context manager."""

    def __init__(self, settings: ScorerSettings, metrics: ScorerMetrics | None = None, *,
                 consumer: Any = None, producer: Any = None, watcher: Any = None) -> None:
        self.settings = settings
        self.metrics = metrics or ScorerMetrics()
        self._consumer, self._producer, self._watcher = consumer, producer, watcher
        self._stack: ExitStack | None = None
        self._stop = False
        self._pending: dict[tuple[str, int], int] = {}  # acknowledged, not yet committed
        self._inflight: deque[_Batch] = deque()  # served batches in consume order
        self._delivery_errors: list[str] = []
        self.model: ModelSnapshot | None = None
        self.records_served = 0
        self._model_deadline = 0.0
        self._pool: ThreadPoolExecutor | None = None  # scores large frames (settings.serve_threads)

    # -- resources -------------------------------------------------------------------------
    def __enter__(self) -> "ScorerService":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        if self._stack is not None:
            return
        s, stack = self.settings, ExitStack()
        self._stack = stack
        if HEAP_KEEP_BYTES[s.mode]:
            keep_freed_memory(HEAP_KEEP_BYTES[s.mode])
        if self._consumer is None:
            ensure_pipeline_topics(s.kafka, s.partitions)
            self._consumer = make_consumer(s.kafka, s.group, **s.consumer_overrides())
        stack.callback(self._consumer.close)
        if self._producer is None:
            self._producer = make_producer(s.kafka, on_delivery=self._on_delivery, **s.producer_overrides())
        if self._watcher is None:
            self._watcher = ModelWatcher(s.kafka)
        stack.callback(self._watcher.close)
        warm_up()
        if s.serve_threads > 1:
            self._pool = ThreadPoolExecutor(s.serve_threads, thread_name_prefix="score")
            stack.callback(self._pool.shutdown)
            stack.callback(setattr, self, "_pool", None)
        self._consumer.subscribe([s.kafka.topics.score], on_assign=self._on_assign,
                                 on_revoke=self._on_revoke, on_lost=self._on_lost)
        self._model_deadline = time.monotonic() + s.model_wait

    def close(self) -> None:
        if self._stack is not None:
            stack, self._stack = self._stack, None
            try:
                self._producer.flush(30)
            finally:
                stack.close()

    def stop(self) -> None:
        """Ask the loop to end after the current batch; safe from a signal handler."""
        self._stop = True

    # -- the loop --------------------------------------------------------------------------
    def run(self, max_records: int | None = None, timeout: float | None = None) -> int:
        """Serve until stopped, ``max_records`` records were answered or ``timeout`` passed."""
        self.open()
        s, m = self.settings, self.metrics
        start = time.monotonic()
        end = start + timeout if timeout is not None else float("inf")
        served_at_start = self.records_served
        next_model = next_commit = start
        next_lag = start + s.lag_interval
        try:
            while not self._stop:
                now = time.monotonic()
                if now >= end or (max_records is not None
                                  and self.records_served - served_at_start >= max_records):
                    break
                if now >= next_model:
                    self._check_model(0.0)
                    next_model = now + s.model_check_interval
                msgs = self._next_batch()
                if msgs:
                    self._serve_batch(msgs)
                else:
                    self._producer.poll(0)
                now = time.monotonic()
                if now >= next_commit:
                    self._commit(wait=False)
                    next_commit = now + s.commit_interval
                if now >= next_lag:
                    self._measure_lag()
                    next_lag = now + s.lag_interval
            self._commit()  # a clean stop commits what it answered; a raise does not
        finally:
            m.model_age.set(time.time() - self.model.created_at if self.model else 0)
        return self.records_served - served_at_start

    def _next_batch(self) -> list[Any]:
        """What the fetch queue holds (up to ``batch_size``), waiting only while it is empty.

        librdkafka's ``consume(n, timeout)`` waits until ``n`` messages are there, restarting the
        timeout at each arrival, so a steady trickle of requests (1,000/s against a 2 ms wait)
        would hold a batch back until it is full. Here a batch never waits to fill: a
        non-blocking ``consume`` takes what is queued; only when nothing is, ``poll`` waits up to
        ``consume_wait`` and returns at the first message.
        """
        c, s = self._consumer, self.settings
        msgs = c.consume(s.batch_size, 0)
        if msgs:
            return msgs
        first = c.poll(s.consume_wait)
        if first is None:
            return []
        return [first, *c.consume(s.batch_size - 1, 0)] if s.batch_size > 1 else [first]

    def _check_model(self, timeout: float) -> None:
        newer = self._watcher.poll(timeout)
        if newer is not None and (self.model is None or newer.version > self.model.version):
            old = self.model.version if self.model else 0
            self.model = newer  # one reference swap between batches: never a half-loaded model
            self.metrics.model_version.set(newer.version)
            self.metrics.model_age.set(time.time() - newer.created_at)
            self.metrics.model_swaps.inc()
            log.info("serving model version %d (was %d, spec %s)", newer.version, old, newer.spec)

    def _await_model(self) -> None:
        """No model yet: wait out what is left of the start-up grace, then serve error replies."""
        while self.model is None and not self._stop:
            remaining = self._model_deadline - time.monotonic()
            if remaining <= 0:
                return
            self._check_model(min(remaining, 0.5))

    def _serve_batch(self, msgs: list[Any]) -> None:
        m, s = self.metrics, self.settings
        t0 = time.perf_counter()
        if self.model is None:
            self._await_model()
        frames = records_in = bytes_in = records_out = bytes_out = 0
        outcomes: dict[str, int] = {}
        requests = []
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.code() != CKError._PARTITION_EOF:
                    if err.fatal():
                        raise KafkaError(f"consumer failed: {err}")
                    log.warning("consumer error: %s", err)
                continue
            requests.append(msg)
        t1 = time.perf_counter()
        replies = serve_many([msg.value() for msg in requests], self.model, self._pool)
        serve_s = time.perf_counter() - t1
        batch = _Batch(self._on_delivery_error)
        # counted before producing: a full queue makes ``_produce`` poll, which may run callbacks
        batch.left = len(replies) + sum(1 for r in replies if not r.ok)
        acked = batch.delivered
        topic, stamps = s.kafka.topics.predictions, []
        for msg, reply in zip(requests, replies):
            self._produce(topic, msg.key(), reply.value, acked)
            frames += 1
            bytes_in += len(msg.value() or b"")
            bytes_out += len(reply.value)
            records_in += reply.n_records
            if reply.ok:
                records_out += reply.n_records
                outcomes["ok"] = outcomes.get("ok", 0) + 1
            else:
                outcomes["error"] = outcomes.get("error", 0) + 1
                m.rejected.labels(reply.reason).inc(max(1, reply.n_records))
                send_dead_letter(self._producer, s.kafka.topics.dlq, msg, reply.reason, reply.detail, SERVICE,
                                 on_delivery=acked)
            ts_type, ts = msg.timestamp()
            if ts_type and ts > 0:
                stamps.append(ts)
            batch.offsets[(msg.topic(), msg.partition())] = msg.offset() + 1
        if batch.offsets:
            self._inflight.append(batch)
        self._producer.poll(0)
        if stamps:
            wall_ms = time.time() * 1000.0
            observe_many(m.request_seconds, [max(0.0, (wall_ms - ts) / 1000.0) for ts in stamps])
        self.records_served += records_in
        m.frames_in.inc(frames)
        m.records_in.inc(records_in)
        m.bytes_in.inc(bytes_in)
        m.frames_out.inc(frames)
        m.records_out.inc(records_out)
        m.bytes_out.inc(bytes_out)
        for outcome, n in outcomes.items():
            m.replies.labels(outcome).inc(n)
        m.kernel_seconds.observe(serve_s)
        m.batch_seconds.observe(time.perf_counter() - t0)

    def _produce(self, topic: str, key: bytes | None, value: bytes, on_delivery: Any) -> None:
        while True:
            try:
                self._producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
                return
            except BufferError:
                self._producer.poll(0.05)

    def _on_delivery(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self._on_delivery_error(err)

    def _on_delivery_error(self, err: Any) -> None:
        self._delivery_errors.append(str(err))
        self.metrics.delivery_errors.inc()

    # -- offsets ---------------------------------------------------------------------------
    def _settle(self) -> None:
        """Move the offsets of the leading fully acknowledged batches to the commit set (a later
        batch acknowledged first waits for the earlier ones: offsets only move forward)."""
        while self._inflight and self._inflight[0].left <= 0:
            self._pending.update(self._inflight.popleft().offsets)

    def _commit(self, only: set[tuple[str, int]] | None = None, wait: bool = True) -> None:
        """Commit the offsets of requests whose replies (and dead letters) were all acknowledged.

        ``wait=True`` (revoke, clean stop) flushes first, so everything answered is committed, and
        waits for the broker's answer. The interval commit (``wait=False``) neither flushes nor
        waits: it commits what is acknowledged so far and leaves the rest for the next interval.
        A synchronous flush every interval stalled the loop for a produce round trip (up to 240 ms
        measured on a loaded machine), which every request arriving meanwhile paid for. A lost
        asynchronous commit only means duplicate replies after a failure.
        """
        if wait:
            left = self._producer.flush(30)
        else:
            left = 0
            self._producer.poll(0)  # runs the delivery callbacks that count batches down
        if left or self._delivery_errors:
            errs = self._delivery_errors[:3] or [f"{left} replies unflushed"]
            raise KafkaError(f"replies not acknowledged, offsets left uncommitted: {'; '.join(errs)}")
        self._settle()
        keys = [k for k in self._pending if only is None or k in only]
        if not keys:
            return
        offsets = [TopicPartition(t, p, self._pending.pop((t, p))) for t, p in keys]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=not wait)
            self.metrics.commits.inc()
        except KafkaException as exc:  # e.g. a rebalance in between: the requests are answered again
            log.warning("offset commit failed, requests may be answered twice: %s", exc)

    def _on_assign(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        log.info("assigned partitions %s", sorted(tp.partition for tp in partitions))

    def _on_revoke(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        self._commit(revoked)
        for tp in partitions:
            self._drop_lag(tp.partition)
        log.info("revoked partitions %s", sorted(tp.partition for tp in partitions))

    def _on_lost(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        for tp in partitions:  # someone else owns them now: committing would be wrong
            self._pending.pop((tp.topic, tp.partition), None)
            for batch in self._inflight:
                batch.offsets.pop((tp.topic, tp.partition), None)
            self._drop_lag(tp.partition)
        log.warning("lost partitions %s", sorted(tp.partition for tp in partitions))

    def _drop_lag(self, partition: int) -> None:
        try:
            self.metrics.lag.remove(self.settings.kafka.topics.score, str(partition))
        except KeyError:
            pass

    def _measure_lag(self) -> None:
        if self.model is not None:
            self.metrics.model_age.set(time.time() - self.model.created_at)
        try:
            assigned = self._consumer.assignment()
            for tp in self._consumer.position(assigned) if assigned else []:
                # cached: the high watermark of the last fetch response, no broker round trip
                _lo, hi = self._consumer.get_watermark_offsets(tp, cached=True)
                if tp.offset >= 0:
                    self.metrics.lag.labels(tp.topic, str(tp.partition)).set(max(0, hi - tp.offset))
        except KafkaException as exc:
            log.debug("lag not measured: %s", exc)
