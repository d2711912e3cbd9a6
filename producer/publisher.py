"""Frames to Kafka: idempotent, acks=all, compressed; every delivery outcome is counted.

The delivery callback is the only place that learns whether a frame is durable, so it keeps the
acknowledged and failed record counts that the service reports and that relay mode checks before
it commits its source offsets.
"""
from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from confluent_kafka import KafkaException, Producer

from shared.errors import KafkaError
from shared.frames import END_HEADER

from producer.metrics import ProducerMetrics

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Deliveries:
    frames_sent: int = 0
    records_sent: int = 0
    bytes_sent: int = 0
    frames_acked: int = 0
    records_acked: int = 0
    frames_failed: int = 0
    records_failed: int = 0
    errors: list[str] = field(default_factory=list)  # first few error strings (codes, never payloads)

    @property
    def in_flight(self) -> int:
        return self.frames_sent - self.frames_acked - self.frames_failed


class FramePublisher:
    """Sends encoded frames to one topic: round-robin over its partitions, at random, or by a run key."""

    def __init__(self, config: dict[str, Any], topic: str, metrics: ProducerMetrics,
                 partitioning: str = "roundrobin", producer: Producer | None = None) -> None:
        self.topic, self.metrics = topic, metrics
        self.producer = producer or Producer(config)
        self.stats = Deliveries()
        # the labelled children once, not a label lookup per metric per frame
        self._frames_out, self._records_out, self._bytes_out = (
            m.labels(topic) for m in (metrics.frames_out, metrics.records_out, metrics.bytes_out))
        self._records_acked = metrics.records_acked.labels(topic)
        self._next = 0
        self.partitions: list[int] = []
        # "key": every frame of this run carries one random key, so the run stays in order on one
        # partition (several producers then spread by key); the key says nothing about the data
        self.run_key = secrets.token_bytes(8) if partitioning == "key" else None
        if partitioning == "roundrobin":
            self.partitions = self._partitions(topic)

    def _partitions(self, topic: str, wait: float = 10.0) -> list[int]:
        """The topic's partitions; a topic created a moment ago may take a few metadata rounds to
        show on a busy broker, so an unknown topic is asked for again until ``wait`` seconds pass."""
        deadline = time.monotonic() + wait
        while True:
            try:
                meta = self.producer.list_topics(topic, timeout=10)
            except KafkaException as exc:
                raise KafkaError(f"cannot read metadata of topic {topic}: {exc}") from None
            tmeta = meta.topics.get(topic)
            if tmeta is not None and tmeta.error is None and tmeta.partitions:
                return sorted(tmeta.partitions)
            if time.monotonic() > deadline:
                raise KafkaError(f"topic {topic} does not exist ({tmeta.error if tmeta else 'no metadata'})")
            time.sleep(0.2)

    def _callback(self, n_records: int, size: int) -> Callable[[Any, Any], None]:
        def on_delivery(err: Any, msg: Any) -> None:
            if err is None:
                self.stats.frames_acked += 1
                self.stats.records_acked += n_records
                self._records_acked.inc(n_records)
            else:
                self.stats.frames_failed += 1
                self.stats.records_failed += n_records
                self.metrics.delivery_errors.labels(self.topic).inc()
                if len(self.stats.errors) < 20:
                    self.stats.errors.append(str(err))
                log.error("frame of %d records not delivered to %s: %s", n_records, self.topic, err)
        return on_delivery

    def _produce(self, kwargs: dict[str, Any]) -> None:
        """Hand one message to the client; waits (serving callbacks) while its queue is full."""
        while True:
            try:
                self.producer.produce(self.topic, **kwargs)
                return
            except BufferError:
                self.producer.poll(0.05)

    def send(self, payload: bytes, n_records: int, key: bytes | None = None) -> None:
        """Hand a frame to the client; waits (serving callbacks) while its queue is full."""
        kwargs: dict[str, Any] = {"value": payload, "on_delivery": self._callback(n_records, len(payload))}
        key = key if key is not None else self.run_key
        if key is not None:
            kwargs["key"] = key
        if self.partitions and key is None:
            kwargs["partition"] = self.partitions[self._next % len(self.partitions)]
            self._next += 1
        self._produce(kwargs)
        self.producer.poll(0)
        self.stats.frames_sent += 1
        self.stats.records_sent += n_records
        self.stats.bytes_sent += len(payload)
        self._frames_out.inc()
        self._records_out.inc(n_records)
        self._bytes_out.inc(len(payload))

    def mark_end(self, payload: bytes) -> None:
        """Send ``payload`` (an empty train frame) with the end-of-input header to every partition,
        after this producer's frames there (a producer keeps each partition in order). Not counted
        as frames; a marker that fails only delays a trainer's checkpoint to its idle rule."""
        def on_delivery(err: Any, _msg: Any) -> None:
            if err is not None:
                log.warning("end-of-input marker not delivered to %s: %s", self.topic, err)
        try:
            for p in self.partitions or self._partitions(self.topic):
                self._produce({"value": payload, "partition": p, "headers": [(END_HEADER, b"")],
                               "on_delivery": on_delivery})
        except (KafkaError, KafkaException) as exc:  # the records are sent: never fail the run for it
            log.warning("end-of-input markers not sent to %s: %s", self.topic, exc)
        self.producer.poll(0)

    def flush(self, timeout: float = 60.0) -> int:
        """Wait for every frame's outcome; returns how many are still without one."""
        return int(self.producer.flush(timeout))
