"""The record-at-a-time API for applications: ``Agent.send(record)``, ``flush()``, ``close()``.

``send`` only copies the record's field values into a buffer. Every ``hash_records`` records
(whole frames) the buffer is cut: the values become one column per field and go through the
columnar path (``Hasher.batch``), which resolves each distinct value of a column once per cut
with the keyed hash in one numba call per field, and the rows go out in frames of
``frame_records``. Resolving each record as it arrived (``Hasher.record``: a dict probe per field,
a Python value rule per first sighting) took about three times the CPU per record.

So a bad record (bad or missing label, unparseable number) is found at the cut, not in ``send``:
it is counted in ``bad`` and the metrics and skipped; under ``strict`` the cut raises
:class:`RecordError` after the good records were handed to the publisher. ``flush`` cuts what is
buffered and waits for the broker. A record never waits in the buffer longer than ``max_delay``
seconds while records keep arriving: the ``send`` that finds the oldest buffered record that old
cuts (there is no timer thread, so an agent that stops receiving records holds them until the next
``send``, ``flush`` or ``close``). See the record API section of ``docs/producer.md``.

    with Agent.open("owner.schema.toml", "owner.key") as agent:
        for rec in records:
            agent.send(rec)
"""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shared.errors import ConfigError, RecordError
from shared.frames import encode_train
from shared.settings import KafkaSettings

from producer.columnar import EncodedBatch
from producer.hashing import Hasher, make_hasher
from producer.keys import read_key
from producer.metrics import ProducerMetrics
from producer.publisher import Deliveries, FramePublisher
from producer.recordbuffer import CHUNK, ColumnBuffer, field_getter
from producer.schema import Schema, load_schema
from producer.settings import ProducerSettings

# records hashed together: Hasher.batch resolves each distinct value of a column once per batch, so
# a batch of 16384 (four default frames) costs about a quarter less CPU per record than one frame
# on 20 Zipf fields; the frames published keep ``frame_records`` (see docs/producer.md)
HASH_RECORDS = 16384
MAX_DELAY = 1.0  # seconds a buffered record may wait for its cut while records keep arriving


class Agent:
    """Publishes training frames from single records; not thread-safe (one per thread)."""

    def __init__(self, hasher: Hasher, settings: ProducerSettings | None = None,
                 metrics: ProducerMetrics | None = None, publisher: FramePublisher | None = None,
                 hash_records: int = HASH_RECORDS, max_delay: float = MAX_DELAY) -> None:
        if hash_records < 1:
            raise ValueError("hash_records must be >= 1")
        if not max_delay >= 0:
            raise ValueError("max_delay must be >= 0 seconds")
        if hasher.schema.label is None:
            raise ConfigError("the record API publishes training frames: the schema needs a [label]")
        self.hasher = hasher
        self.settings = settings or ProducerSettings(kafka=KafkaSettings.from_env())
        self.metrics = metrics or ProducerMetrics()
        self.publisher = publisher or FramePublisher(self.settings.kafka_config(), self.settings.kafka.topics.train,
                                                     self.metrics, self.settings.partitioning)
        self.metrics.key.info({"key_id": hasher.spec.key_id_hex, "spec": str(hasher.spec)})
        self.bad: Counter[str] = Counter()
        self._cut_records = 0  # records cut into frames so far (good and bad)
        self._columns = hasher.schema.input_columns  # features, then the label
        self._buffer = ColumnBuffer(self._columns, frozenset(n.name for n in hasher.schema.numeric))
        self._extend = self._buffer.flat.extend
        self._get = field_getter(self._columns)
        self._frame_records = step = self.settings.frame_records
        self._cut_at = -(-max(hash_records, step) // step) * step  # whole frames
        self._n = 0  # buffered records
        self._mark = min(CHUNK, self._cut_at)  # at this many buffered records: join a chunk or cut
        self._max_delay = max_delay
        self._due = 0.0  # monotonic time by which the oldest buffered record is cut

    @classmethod
    def open(cls, schema: str | Path | Schema, key: str | Path | bytes | None,
             kafka: KafkaSettings | None = None, hash_records: int = HASH_RECORDS,
             max_delay: float = MAX_DELAY, **settings: Any) -> "Agent":
        """An agent from a schema file (its numeric edges must be fitted) and a key file or key bytes;
        ``settings`` are :class:`ProducerSettings` fields (``frame_records``, ``strict``, ...)."""
        sch = schema if isinstance(schema, Schema) else load_schema(schema)
        raw = key if isinstance(key, (bytes, type(None))) else read_key(key)
        return cls(make_hasher(sch, raw), ProducerSettings(kafka=kafka or KafkaSettings.from_env(), **settings),
                   hash_records=hash_records, max_delay=max_delay)

    @property
    def stats(self) -> Deliveries:
        return self.publisher.stats

    @property
    def accepted(self) -> int:
        """Records taken by ``send`` (good and bad), the buffered ones included."""
        return self._cut_records + self._n

    @property
    def buffered(self) -> int:
        """Records accepted by ``send`` and not yet cut into a frame."""
        return self._n

    def send(self, record: Mapping[str, Any]) -> None:
        """Accept one record; it is hashed, checked and published when the buffer is cut.

        The field values are copied now, so the caller may reuse or change the mapping afterwards.
        Returns None: a bad record is only found at the cut, where it is counted in ``bad``; under
        ``strict`` the :class:`RecordError` comes from the ``send`` (or ``flush``) that made the cut,
        so it may name an earlier record. Raises TypeError at once for something not a mapping.
        """
        try:
            self._extend(self._get(record))
        except KeyError:  # an absent field reads as None, as in the record path
            if not isinstance(record, Mapping):
                raise TypeError("Agent.send takes a mapping of column name to value") from None
            self._extend(tuple(map(record.get, self._columns)))
        except TypeError:
            if isinstance(record, Mapping):
                raise
            raise TypeError("Agent.send takes a mapping of column name to value") from None
        self._n += 1
        now = time.monotonic()
        if self._n == 1:
            self._due = now + self._max_delay
        if self._n >= self._mark:
            if self._n >= self._cut_at:
                self._cut()
            else:
                self._buffer.seal()
                self._mark = min(self._n + CHUNK, self._cut_at)
        if self._n and now >= self._due:
            self._cut()

    def _encode(self) -> EncodedBatch:
        """The buffered records' CSR rows: columnar, or through the record path when a column's
        Python types would not survive Arrow unchanged (see :mod:`producer.recordbuffer`)."""
        batch = self._buffer.batch()
        if batch is not None:
            return self.hasher.batch(batch, with_label=True)
        return self.hasher.records(self._buffer.records())

    def _cut(self, strict: bool = True) -> None:
        """Encode the buffered records and publish them in frames of ``frame_records``, then count
        the bad ones (and raise under ``strict``).

        The buffer is emptied only once every frame is with the publisher, so an error on the way
        (a refused frame, a bug) loses nothing that ``send`` accepted; a retry may repeat frames.
        """
        n = self._n
        if not n:
            return
        enc = self._encode()
        labels, step = enc.labels, self._frame_records
        assert labels is not None  # the schema has a label (checked in __init__)
        for start in range(0, enc.n, step):
            stop = min(start + step, enc.n)
            offsets, indices, values = enc.rows(start, stop)
            self.publisher.send(encode_train(self.hasher.spec, labels[start:stop], offsets, indices, values=values),
                                stop - start)
        first = self._cut_records
        self._cut_records += n
        self._buffer.clear()
        self._n = 0
        self._mark = min(CHUNK, self._cut_at)
        for _, _, reason in enc.bad:
            self.bad[reason] += 1
            self.metrics.bad_records.labels(reason).inc()
        if enc.bad and strict and self.settings.strict:
            pos, _, reason = enc.bad[0]
            raise RecordError(f"record {first + pos} (counted from 0) of this agent: {reason}; "
                              f"{len(enc.bad)} bad of the {n} cut with it", reason)

    def flush(self, timeout: float = 60.0) -> int:
        """Cut and send what is buffered, wait for the broker; returns frames still without an outcome.

        Under ``strict`` a bad record raises here, after the broker was waited for.
        """
        try:
            self._cut()
        finally:
            left = self.publisher.flush(timeout)
        return left

    def close(self) -> None:
        """Publish everything accepted and wait for the broker (the agent stays usable)."""
        self.flush()

    def __enter__(self) -> "Agent":
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:  # publish what was accepted, but let the error that ended the block through
            self._cut(strict=False)
            self.publisher.flush()
