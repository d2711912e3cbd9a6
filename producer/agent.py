"""The record-at-a-time API for applications: ``Agent.send(record)``, ``flush()``, ``close()``.

Records are resolved as they arrive (indices cached per field and input value) and cut into
training frames of ``frame_records``; the keyed hashes of a frame's never-seen values are computed
together when the frame is cut (one numba call per field), so a first sighting costs little more
than a repeat. ``flush`` sends a partial frame and waits for the broker.

    with Agent.open("owner.schema.toml", "owner.key") as agent:
        for rec in records:
            agent.send(rec)
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from shared.errors import RecordError
from shared.frames import encode_train
from shared.settings import KafkaSettings

from producer.hashing import Hasher, make_hasher
from producer.keys import read_key
from producer.metrics import ProducerMetrics
from producer.publisher import Deliveries, FramePublisher
from producer.schema import Schema, load_schema
from producer.settings import ProducerSettings


class Agent:
    """Publishes training frames from single records; not thread-safe (one per thread)."""

    def __init__(self, hasher: Hasher, settings: ProducerSettings | None = None,
                 metrics: ProducerMetrics | None = None, publisher: FramePublisher | None = None) -> None:
        self.hasher = hasher
        self.settings = settings or ProducerSettings(kafka=KafkaSettings.from_env())
        self.metrics = metrics or ProducerMetrics()
        self.publisher = publisher or FramePublisher(self.settings.kafka_config(), self.settings.kafka.topics.train,
                                                     self.metrics, self.settings.partitioning)
        self.metrics.key.info({"key_id": hasher.spec.key_id_hex, "spec": str(hasher.spec)})
        self.bad: Counter[str] = Counter()
        self._reset()

    @classmethod
    def open(cls, schema: str | Path | Schema, key: str | Path | bytes | None,
             kafka: KafkaSettings | None = None, **settings: Any) -> "Agent":
        """An agent from a schema file (its numeric edges must be fitted) and a key file or key bytes."""
        sch = schema if isinstance(schema, Schema) else load_schema(schema)
        raw = key if isinstance(key, (bytes, type(None))) else read_key(key)
        return cls(make_hasher(sch, raw), ProducerSettings(kafka=kafka or KafkaSettings.from_env(), **settings))

    def _reset(self) -> None:
        self._offsets: list[int] = [0]
        self._indices: list[int] = []
        self._values: list[float] = []
        self._labels: list[int] = []

    @property
    def stats(self) -> Deliveries:
        return self.publisher.stats

    def send(self, record: Mapping[str, Any]) -> bool:
        """Queue one record; False (and counted in ``bad``) if it cannot be turned into features."""
        try:
            label, idx, vals = self.hasher.record(record, defer=True)
        except RecordError as exc:
            self.bad[exc.reason] += 1
            self.metrics.bad_records.labels(exc.reason).inc()
            if self.settings.strict:
                raise
            return False
        self._indices += idx
        if self.hasher.needs_values:
            self._values += vals
        self._labels.append(label)
        self._offsets.append(len(self._indices))
        if len(self._labels) >= self.settings.frame_records:
            self._emit()
        return True

    def _emit(self) -> None:
        n = len(self._labels)
        if not n:
            return
        payload = encode_train(
            self.hasher.spec, np.array(self._labels, dtype=np.uint8), np.array(self._offsets, dtype=np.uint32),
            self.hasher.settle(self._indices),
            values=np.array(self._values, dtype=np.float32) if self.hasher.needs_values else None)
        self._reset()
        self.publisher.send(payload, n)

    def flush(self, timeout: float = 60.0) -> int:
        """Send the partial frame and wait for the broker; returns frames still without an outcome."""
        self._emit()
        return self.publisher.flush(timeout)

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> "Agent":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
