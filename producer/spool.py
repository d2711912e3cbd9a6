"""``hashbridge produce --watch DIR``: a producer that stays up and publishes every file that lands
in a spool directory.

Why: the owner runs the producer beside its source systems, and exports arrive as files. A fresh
``hashbridge produce`` per file spends ~1 s on the interpreter, imports, the broker connection and
loading the hash kernels before it hashes a row, which is longer than hashing a million rows
takes. The watching producer pays that once: it starts, warms its kernels on a throwaway hasher
(so the real one starts with empty value tables), connects, logs ``ready``, and waits.

The contract with the writer: a file is written elsewhere (or under a name starting with ``.`` or
``_``) and renamed into ``DIR``, which is atomic on one filesystem. Files are taken one at a time
in name order. A file whose every record was acknowledged moves to ``DIR/done/``. One that could
not be read, that ``--strict`` refused, or with a delivery error moves to ``DIR/failed/``, with
the reason in ``NAME.error`` beside it. A stop (SIGTERM) during a file flushes what was accepted
and leaves the file in ``DIR``: the next start publishes it whole again (at least once, as
rerunning the one-shot command would).
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from shared.errors import HashbridgeError

from producer import csvplain
from producer.hashing import Hasher
from producer.metrics import ProducerMetrics
from producer.schema import Schema
from producer.service import RunReport

log = logging.getLogger(__name__)

SUFFIXES = frozenset({".csv", ".parquet", ".pq", ".jsonl", ".json", ".ndjson"})
DONE, FAILED = "done", "failed"
# a look at a small spool costs ~17 us (pending()): polling every 10 ms is ~0.2 % of a core, and a file
# waits 5 ms on average before its first row is read
POLL_SECONDS = 0.01


def pending(directory: Path) -> list[Path]:
    """Files ready to publish, in name order: regular files with a known suffix whose name does
    not start with ``.`` or ``_`` (files being written)."""
    out = [p for p in directory.iterdir()
           if not p.name.startswith((".", "_")) and p.suffix.lower() in SUFFIXES and p.is_file()]
    return sorted(out)


def move(path: Path, sub: str) -> Path:
    """Move ``path`` into ``path.parent / sub``; a name already there gets a time stamp added."""
    target = path.parent / sub
    target.mkdir(exist_ok=True)
    dest = target / path.name
    if dest.exists():
        dest = target / f"{path.stem}.{time.time_ns()}{path.suffix}"
    os.replace(path, dest)
    return dest


def warm_up(schema: Schema, make: Callable[[], Hasher]) -> None:
    """Load every columnar kernel the schema's files will call, on a throwaway hasher over a
    two-row batch of strings (what the CSV source yields), so the first file does not pay it and
    the real hasher's value tables and counts start empty."""
    positive = sorted(schema.label.positive)[0] if schema.label is not None else "1"
    cols = {c: pa.array(["0", ""]) for c in schema.input_columns}
    if schema.label is not None:
        cols[schema.label.column] = pa.array([positive, positive])
    make().batch(pa.RecordBatch.from_pydict(cols))
    csvplain.warm_up()


@dataclass(slots=True)
class SpoolReport:
    files_done: int = 0
    files_failed: int = 0
    records_acked: int = 0
    stopped: bool = False


class SpoolService:
    """Waits for files in ``directory`` and publishes each with ``publish_file`` (which returns the
    file's :class:`RunReport`, and is given a ``stop`` hook to end a file early)."""

    def __init__(self, directory: Path, publish_file: Callable[[Path], RunReport],
                 metrics: ProducerMetrics | None = None, poll_seconds: float = POLL_SECONDS) -> None:
        if not directory.is_dir():
            raise HashbridgeError(f"--watch: {directory} is not a directory")
        self.directory, self.publish_file, self.poll_seconds = directory, publish_file, poll_seconds
        self.metrics = metrics or ProducerMetrics()
        self._stop = False
        self.on_stop: Callable[[], None] | None = None  # stops the file being published, if any
        self.report = SpoolReport()

    def stop(self) -> None:
        self._stop = True
        if self.on_stop is not None:
            self.on_stop()

    def _one(self, path: Path) -> bool:
        """Publish one file and move it; False when a stop ended it early (it stays in place)."""
        try:
            report = self.publish_file(path)
        except (HashbridgeError, OSError, pa.ArrowException) as exc:
            self._fail(path, f"{type(exc).__name__}: {exc}")
            return True
        if report.stopped:
            log.warning("stopped during %s after %d of its records were acknowledged; it stays in %s and "
                        "is published whole again on the next start", path.name, report.records_acked,
                        self.directory)
            return False
        self.report.records_acked += report.records_acked
        if report.delivery_errors:
            self._fail(path, f"{report.delivery_errors} frames were not delivered "
                             f"({report.records_acked} records acknowledged)")
            return True
        dest = move(path, DONE)
        self.report.files_done += 1
        self.metrics.spool_files.labels(DONE).inc()
        log.info("%s: published %s in %s frames (%s records/s); skipped %d bad rows -> %s", path.name,
                 f"{report.records_acked:,}", f"{report.frames:,}", f"{report.records_per_second:,.0f}",
                 report.bad_count, dest.parent.name)
        return True

    def _fail(self, path: Path, reason: str) -> None:
        dest = move(path, FAILED)
        dest.with_name(dest.name + ".error").write_text(reason + "\n")
        self.report.files_failed += 1
        self.metrics.spool_files.labels(FAILED).inc()
        log.error("%s failed (%s) -> %s", path.name, reason, dest.parent.name)

    def run(self, idle_exit: float | None = None) -> SpoolReport:
        """Publish files as they land until ``stop()``, or ``idle_exit`` seconds without a file."""
        log.info("ready: watching %s for %s files", self.directory, "/".join(sorted(SUFFIXES)))
        last = time.monotonic()
        while not self._stop:
            files = pending(self.directory)
            left = len(files)
            for path in files:
                self.metrics.spool_pending.set(left)
                if self._stop or not self._one(path):
                    break
                left -= 1
            self.metrics.spool_pending.set(left)
            if files:
                last = time.monotonic()
            elif idle_exit is not None and time.monotonic() - last > idle_exit:
                break
            else:
                time.sleep(self.poll_seconds)
        self.report.stopped = self._stop
        return self.report
