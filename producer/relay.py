"""Relay mode: raw JSON records from the owner's own Kafka topic become frames on another cluster.

Source offsets are committed only after the destination acknowledged every frame made from them,
so a crash at any point re-sends records rather than losing them (at-least-once; a restarted
relay may publish some records twice, which the count test reports).
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from shared.errors import KafkaError

from producer.hashing import Hasher
from producer.metrics import ProducerMetrics
from producer.publisher import FramePublisher
from producer.service import ProducerService, RunReport
from producer.settings import ProducerSettings
from producer.sources import Rejects

log = logging.getLogger(__name__)


class _NoSource:
    rejects = Rejects()

    def __iter__(self):  # pragma: no cover - relay reads its consumer instead
        return iter(())

    def line_of(self, row: int) -> int:
        return -1


class RelayService(ProducerService):
    """Consume, hash, publish, wait for acknowledgements, then commit; repeat until stopped."""

    def __init__(self, settings: ProducerSettings, hasher: Hasher, consumer: Consumer, source_topic: str,
                 publisher: FramePublisher, metrics: ProducerMetrics) -> None:
        super().__init__(settings, hasher, _NoSource(), publisher, metrics)
        self.consumer, self.source_topic = consumer, source_topic

    def _decode(self, msgs: list[Any]) -> tuple[list[dict[str, Any]], list[int]]:
        records, offsets = [], []
        for m in msgs:
            try:
                rec = json.loads(m.value() or b"")
            except ValueError:
                rec = None
            if not isinstance(rec, dict):
                self._note_bad(m.offset(), "", "bad_json")
                continue
            records.append(rec)
            offsets.append(m.offset())
        return records, offsets

    def _commit(self, msgs: list[Any]) -> None:
        last: dict[int, int] = {}
        for m in msgs:
            last[m.partition()] = max(last.get(m.partition(), -1), m.offset())
        self.consumer.commit(offsets=[TopicPartition(self.source_topic, p, o + 1) for p, o in last.items()],
                             asynchronous=False)

    def run(self, max_records: int | None = None, timeout: float | None = None,
            idle_exit: float | None = None) -> RunReport:
        """Relay until ``stop()``, ``timeout``, ``max_records`` or ``idle_exit`` seconds without input."""
        r = self.report
        t0 = last_input = time.monotonic()
        assigned: list[float] = []  # idle time counts from the first assignment (a rebalance after a
        # crash waits for the dead member's session to expire)
        self.consumer.subscribe([self.source_topic],
                                on_assign=lambda _c, parts: assigned.append(time.monotonic()) if parts else None)
        try:
            while not self._stop:
                now = time.monotonic()
                if timeout is not None and now - t0 > timeout:
                    break
                if idle_exit is not None and assigned and now - max(assigned[0], last_input) > idle_exit:
                    break
                if max_records is not None and r.records_read >= max_records:
                    break
                t_batch = time.perf_counter()
                msgs = self.consumer.consume(num_messages=self.settings.frame_records, timeout=0.5)
                good = []
                for m in msgs:
                    if m.error() is not None:
                        log.warning("source consumer error: %s", m.error())
                    else:
                        good.append(m)
                if not good:
                    continue
                if not assigned:
                    assigned.append(time.monotonic())
                records, offsets = self._decode(good)
                r.records_read += len(good)
                t_hash = time.perf_counter()
                enc = self.hasher.records(records)
                self.metrics.hash_seconds.observe(time.perf_counter() - t_hash)
                self._publish(enc)
                for pos, column, reason in enc.bad:
                    self._note_bad(offsets[pos], f"column {column}" if column else "", reason)
                failed_before = self.publisher.stats.frames_failed
                if self.publisher.flush(30.0) or self.publisher.stats.frames_failed != failed_before:
                    raise KafkaError("destination did not acknowledge every frame; source offsets not committed")
                self._commit(good)
                # idle means waiting for input: a slow acknowledgement (the broker's first
                # idempotent producer id can take seconds) is not idle time
                last_input = time.monotonic()
                self.metrics.batch_seconds.observe(time.perf_counter() - t_batch)
        finally:
            stats = self.publisher.stats
            r.records_sent, r.records_acked, r.frames = stats.records_sent, stats.records_acked, stats.frames_sent
            r.delivery_errors = stats.frames_failed
            r.elapsed = time.monotonic() - t0
            r.stopped = self._stop
            self._set_distinct()
        return r
