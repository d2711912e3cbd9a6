"""The producer loop: read a source in chunks, hash, cut frames, publish, report.

A stop request (SIGTERM) ends the loop at a chunk boundary; everything already accepted is then
flushed, so a clean stop loses nothing that was read. Bad rows are counted, reported with their
line numbers and skipped, or end the run under ``strict``.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Callable, Protocol

import numpy as np

from shared.errors import RecordError
from shared.frames import encode_train

from producer.hashing import EncodedBatch, Hasher
from producer.metrics import ProducerMetrics
from producer.publisher import FramePublisher
from producer.settings import ProducerSettings
from producer.sources import Chunk, Rejects

log = logging.getLogger(__name__)

_NO_LABELS, _NO_OFFSETS, _NO_INDICES = np.zeros(0, np.uint8), np.zeros(1, np.uint32), np.zeros(0, np.uint32)
MAX_REPORTED_BAD = 1000  # bad rows kept with their line numbers; all are counted
MAX_LOGGED_BAD = 20


class Source(Protocol):
    rejects: Rejects

    def __iter__(self): ...  # noqa: D105 - yields Chunk

    def line_of(self, row: int) -> int: ...


@dataclass(slots=True)
class RunReport:
    records_read: int = 0  # accepted by the reader (before bad numbers and labels)
    records_sent: int = 0
    records_acked: int = 0
    frames: int = 0
    delivery_errors: int = 0
    bad_count: int = 0
    bad_by_reason: Counter = field(default_factory=Counter)
    bad_rows: list[tuple[int, str, str]] = field(default_factory=list)  # (line, column or detail, reason)
    elapsed: float = 0.0
    stopped: bool = False

    @property
    def records_per_second(self) -> float:
        return self.records_acked / self.elapsed if self.elapsed > 0 else 0.0


class ProducerService:
    """Publishes training frames of one source; ``run`` returns a :class:`RunReport`."""

    def __init__(self, settings: ProducerSettings, hasher: Hasher, source: Source,
                 publisher: FramePublisher, metrics: ProducerMetrics,
                 progress: Callable[[Chunk, RunReport], None] | None = None) -> None:
        self.settings, self.hasher, self.source = settings, hasher, source
        self.publisher, self.metrics, self.progress = publisher, metrics, progress
        self._stop = False
        self._rejects_seen = 0  # reader rejects moved to _unreported so far
        self._unreported: list[tuple[int, str, str]] = []  # (line, reason, detail), not yet reported
        self.report = RunReport()
        spec = hasher.spec
        metrics.key.info({"key_id": spec.key_id_hex, "spec": str(spec)})

    def stop(self) -> None:
        self._stop = True

    def _note_bad(self, line: int, column: str, reason: str) -> None:
        r = self.report
        r.bad_count += 1
        r.bad_by_reason[reason] += 1
        self.metrics.bad_records.labels(reason).inc()
        if len(r.bad_rows) < MAX_REPORTED_BAD:
            r.bad_rows.append((line, column, reason))
        if r.bad_count <= MAX_LOGGED_BAD:
            log.warning("skipped line %d: %s%s", line, reason, f" ({column})" if column else "")
        if self.settings.strict:
            raise RecordError(f"line {line}: {reason}" + (f" ({column})" if column else ""), reason)

    def _new_rejects(self, upto_line: int | None = None) -> list[tuple[int, str, str]]:
        """Rows the reader refused up to file line ``upto_line`` (all when None), not returned
        before: (line, detail, reason). By line, not by count: a source that parses ahead (the CSV
        reader thread, pyarrow's own read-ahead) may already hold the rejects of later blocks, and
        under ``strict`` a reject counted with the wrong chunk would stop the run too early."""
        rows = self.source.rejects.rows
        end = len(rows)  # the reader may append while this runs: take a fixed prefix
        self._unreported.extend(rows[self._rejects_seen:end])
        self._rejects_seen = end
        if upto_line is None:
            out, self._unreported = self._unreported, []
        else:
            out = [r for r in self._unreported if r[0] <= upto_line]
            self._unreported = [r for r in self._unreported if r[0] > upto_line]
        return [(line, detail, reason) for line, reason, detail in out]

    def _encode(self, chunk: Chunk) -> tuple[EncodedBatch, list[tuple[int, str, str]]]:
        """Encode a chunk; returns it with its bad rows (line, column or detail, reason) in line order."""
        t0 = time.perf_counter()
        if chunk.batch is not None:
            enc = self.hasher.batch(chunk.batch)
        else:
            enc = self.hasher.records(chunk.records or [])
        dt = time.perf_counter() - t0
        self.metrics.hash_seconds.observe(dt)
        if dt > 0:
            self.metrics.hash_rate.set(chunk.num_rows / dt)
        last_line = (self.source.line_of(chunk.first_row + chunk.num_rows - 1)
                     if chunk.batch is not None and chunk.num_rows else None)
        bad = self._new_rejects(last_line)
        for pos, column, reason in enc.bad:
            bad.append((self._line(chunk, pos), f"column {column}" if column else "", reason))
        bad.sort()
        return enc, bad

    def _line(self, chunk: Chunk, pos: int) -> int:
        if chunk.record_lines is not None:
            return chunk.record_lines[pos]
        return self.source.line_of(chunk.first_row + pos)

    def _accept(self, chunk: Chunk, enc: EncodedBatch, bad: list[tuple[int, str, str]]) -> None:
        """Publish the chunk and note its bad rows; under ``strict`` only the rows before the first."""
        limit = enc.n
        if bad and self.settings.strict:
            first = bad[0][0]
            limit = sum(1 for p in enc.kept.tolist() if self._line(chunk, p) < first)
        self._publish(enc, limit)
        for line, column, reason in bad:
            self._note_bad(line, column, reason)

    def _publish(self, enc: EncodedBatch, limit: int | None = None) -> None:
        step, spec = self.settings.frame_records, self.hasher.spec
        n = enc.n if limit is None else limit
        for start in range(0, n, step):
            stop = min(start + step, n)
            offsets, indices, values = enc.rows(start, stop)
            payload = encode_train(spec, enc.labels[start:stop], offsets, indices, values=values)
            self.publisher.send(payload, stop - start)

    def run(self, max_records: int | None = None, timeout: float | None = None) -> RunReport:
        """Publish until the source ends, ``max_records`` are read, ``timeout`` passes or ``stop()``."""
        r = self.report
        base = replace(self.publisher.stats)  # a publisher may outlive one run (--watch): count this run's
        t0 = time.monotonic()
        t_batch = time.perf_counter()  # a batch's time runs from the end of the previous one (its read included)
        try:
            for chunk in self.source:
                if max_records is not None and r.records_read + chunk.num_rows > max_records:
                    keep = max(0, max_records - r.records_read)
                    if chunk.batch is not None:
                        chunk.batch = chunk.batch.slice(0, keep)
                    else:
                        chunk.records = (chunk.records or [])[:keep]
                r.records_read += chunk.num_rows
                self._accept(chunk, *self._encode(chunk))
                now = time.perf_counter()
                self.metrics.batch_seconds.observe(now - t_batch)
                t_batch = now
                if self.progress is not None:
                    self.progress(chunk, r)
                if self._stop or (max_records is not None and r.records_read >= max_records):
                    r.stopped = self._stop
                    break
                if timeout is not None and time.monotonic() - t0 > timeout:
                    break
            for line, detail, reason in self._new_rejects():
                self._note_bad(line, detail, reason)
            if self.settings.end_markers and not r.stopped and self.publisher.stats.records_sent > base.records_sent:
                self.publisher.mark_end(encode_train(self.hasher.spec, _NO_LABELS, _NO_OFFSETS, _NO_INDICES))
        finally:
            remaining = self.publisher.flush()
            if remaining:
                log.error("%d frames still undelivered after flush", remaining)
            stats = self.publisher.stats
            r.records_sent = stats.records_sent - base.records_sent
            r.records_acked = stats.records_acked - base.records_acked
            r.frames = stats.frames_sent - base.frames_sent
            r.delivery_errors = stats.frames_failed - base.frames_failed + remaining
            r.elapsed = time.monotonic() - t0
            self._set_distinct()
        return r

    def _set_distinct(self) -> None:
        for f, n in self.hasher.distinct().items():
            self.metrics.distinct.labels(f).set(n)
