"""``hashbridge score``: score local records through the learner's scorer and join the answers back.

Every record gets an opaque random 64-bit request id; the id -> local id mapping stays here in a
sqlite file (so large inputs spill to disk), score frames go to ``hb.score`` keyed by a random
session id, and replies on ``hb.predictions`` are matched by request id. The output has one line
per input record: its local id, probability, model version and a status (``ok``, ``error:<reason>``,
``no_reply``, or ``skipped:<reason>`` for input the producer could not hash).
"""
from __future__ import annotations

import argparse
import csv
import logging
import os
import secrets
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import OFFSET_END, Consumer, KafkaException, TopicPartition

from shared.clients import ensure_pipeline_topics, make_consumer
from shared.errors import ConfigError, FrameError, HashbridgeError, KafkaError
from shared.frames import Kind, decode, encode_score
from shared.logs import setup_logging
from shared.settings import KafkaSettings

from producer.edges import prime_rare
from producer.hashing import EncodedBatch, Hasher, make_hasher
from producer.keys import read_key
from producer.metrics import ProducerMetrics
from producer.publisher import FramePublisher
from producer.schema import load_schema
from producer.settings import ProducerSettings
from producer.sources import open_source

log = logging.getLogger("producer.score")


@dataclass(slots=True)
class ScoreReport:
    sent: int = 0
    answered: int = 0
    errors: Counter = field(default_factory=Counter)
    no_reply: int = 0
    skipped: int = 0
    replies_foreign: int = 0  # reply frames of other sessions or malformed


def _signed(ids: np.ndarray) -> list[int]:
    """sqlite integers are signed 64-bit: store the request ids' bit pattern as int64."""
    return ids.view(np.int64).tolist()


class ScoreSession:
    """One scoring run: sends score frames, collects replies into a sqlite table, writes the join."""

    def __init__(self, hasher: Hasher, kafka: KafkaSettings, db_path: Path, frame_records: int = 1024,
                 consumer: Consumer | None = None) -> None:
        self.hasher, self.kafka, self.frame_records = hasher, kafka, frame_records
        self.session = secrets.token_hex(8).encode()
        self.rng = np.random.default_rng(int.from_bytes(os.urandom(16), "little"))
        self.db = sqlite3.connect(str(db_path))
        self.db.execute("CREATE TABLE req (rid INTEGER PRIMARY KEY, ord INTEGER, local_id TEXT, "
                        "prob REAL, version INTEGER, status TEXT)")
        self.report = ScoreReport()
        metrics = ProducerMetrics()
        settings = ProducerSettings(kafka=kafka)
        self.publisher = FramePublisher(settings.kafka_config(), kafka.topics.score, metrics, partitioning="random")
        self.consumer = consumer or make_consumer(kafka, f"hb-score-{self.session.decode()}")
        self._assign_at_end()

    def _assign_at_end(self) -> None:
        """Read replies from now on: every partition of the predictions topic at its current end."""
        topic = self.kafka.topics.predictions
        meta = self.consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            raise KafkaError(f"topic {topic} does not exist")
        parts = []
        deadline = time.monotonic() + 30.0
        for p in sorted(meta.partitions):
            while True:  # a topic created a moment ago may not have its leaders yet
                try:
                    _, high = self.consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                    break
                except KafkaException as exc:
                    if time.monotonic() > deadline:
                        raise KafkaError(f"cannot read the end of {topic}[{p}]: {exc}") from None
                    time.sleep(0.2)
            parts.append(TopicPartition(topic, p, high if high >= 0 else OFFSET_END))
        self.consumer.assign(parts)

    def add_skipped(self, line: int, local_id: str, reason: str) -> None:
        self.report.skipped += 1
        rid = int(self.rng.integers(-(2**63), 2**63 - 1))  # a placeholder key; never sent
        self.db.execute("INSERT INTO req VALUES (?,?,?,NULL,NULL,?)", (rid, line, local_id, f"skipped:{reason}"))

    def send(self, enc: EncodedBatch, lines: list[int], local_ids: list[str]) -> None:
        """Send one encoded batch in score frames, recording each request id before it leaves."""
        for start in range(0, enc.n, self.frame_records):
            stop = min(start + self.frame_records, enc.n)
            ids = np.frombuffer(self.rng.bytes(8 * (stop - start)), dtype=np.uint64)
            self.db.executemany("INSERT INTO req VALUES (?,?,?,NULL,NULL,'no_reply')",
                                zip(_signed(ids), lines[start:stop], local_ids[start:stop]))
            offsets, indices, values = enc.rows(start, stop)
            self.publisher.send(encode_score(self.hasher.spec, ids, offsets, indices, values=values),
                                stop - start, key=self.session)
            self.report.sent += stop - start
            self.collect(0.0)

    def _apply(self, msg: Any) -> None:
        if msg.key() != self.session:
            return
        try:
            frame = decode(msg.value())
        except FrameError:
            self.report.replies_foreign += 1
            return
        ids = _signed(frame.request_ids) if frame.request_ids is not None else []
        if frame.kind is Kind.PREDICTION:
            cur = self.db.executemany(
                "UPDATE req SET prob=?, version=?, status='ok' WHERE rid=? AND status='no_reply'",
                zip(frame.probabilities.tolist(), [frame.model_version] * len(ids), ids))
            self.report.answered += cur.rowcount
        elif frame.kind is Kind.ERROR:
            reason = frame.reason or "error"
            cur = self.db.executemany("UPDATE req SET status=? WHERE rid=? AND status='no_reply'",
                                      [(f"error:{reason}", i) for i in ids])
            self.report.errors[reason] += cur.rowcount
        else:
            self.report.replies_foreign += 1

    def collect(self, timeout: float) -> int:
        """Read the replies that arrive within ``timeout`` seconds; returns how many messages."""
        msgs = self.consumer.consume(num_messages=1000, timeout=timeout)
        for m in msgs:
            if m.error() is None:
                self._apply(m)
        return len(msgs)

    def wait(self, timeout: float) -> None:
        """Wait until every request is answered, or ``timeout`` seconds pass without a new reply."""
        if self.publisher.flush(60.0):
            raise KafkaError("score frames were not acknowledged by the broker")
        last = time.monotonic()
        while self.report.answered + sum(self.report.errors.values()) < self.report.sent:
            if self.collect(0.5):
                last = time.monotonic()
            elif time.monotonic() - last > timeout:
                break
        self.report.no_reply = self.report.sent - self.report.answered - sum(self.report.errors.values())

    def write(self, out: Path) -> None:
        with open(out, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["local_id", "probability", "model_version", "status"])
            for local_id, prob, version, status in self.db.execute(
                    "SELECT local_id, prob, version, status FROM req ORDER BY ord"):
                w.writerow([local_id, "" if prob is None else repr(prob), "" if version is None else version,
                            status])

    def unanswered(self, limit: int = 50) -> list[tuple[int, str]]:
        return list(self.db.execute("SELECT ord, local_id FROM req WHERE status='no_reply' ORDER BY ord LIMIT ?",
                                    (limit,)))

    def close(self) -> None:
        self.consumer.close()
        self.db.close()


def score_file(args: argparse.Namespace, kafka: KafkaSettings) -> ScoreReport:
    schema = load_schema(args.schema)
    if schema.unfitted:
        raise ConfigError(f"numeric columns {list(schema.unfitted)} have no edges: produce or "
                          "'hashbridge schema fit' first, so scoring bins numbers like training did")
    hasher = make_hasher(schema, read_key(args.key) if args.key else None)
    if hasher.rare.enabled:  # the windows start from the training input when it is given, else this input
        prime = getattr(args, "rare_prime", None)
        prime_rare(hasher, prime or args.input, fmt=None if prime else args.format,
                   skip_rows=0 if prime else args.skip_rows)
    columns = schema.categorical + tuple(n.name for n in schema.numeric)
    if schema.id_column:
        columns += (schema.id_column,)
    source = open_source(args.input, schema, columns, fmt=args.format, skip_rows=args.skip_rows)
    with ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="hb-score-"))
        session = ScoreSession(hasher, kafka, Path(tmp) / "requests.sqlite", args.frame_records)
        stack.callback(session.close)
        for chunk in source:
            enc = hasher.batch(chunk.batch, with_label=False) if chunk.batch is not None else \
                hasher.records(chunk.records or [], with_label=False)
            n_in = chunk.num_rows
            lines = (chunk.record_lines if chunk.record_lines is not None
                     else [source.line_of(chunk.first_row + i) for i in range(n_in)])
            if schema.id_column and chunk.batch is not None:
                ids = [str(v).strip() for v in chunk.batch.column(schema.id_column).to_pylist()]
            elif schema.id_column:
                ids = [str(r.get(schema.id_column, "")) for r in chunk.records or []]
            else:
                ids = [str(x) for x in lines]
            for pos, column, reason in enc.bad:
                session.add_skipped(lines[pos], ids[pos], reason)
                log.warning("line %d skipped: %s in column %s", lines[pos], reason, column)
            kept = enc.kept.tolist()
            session.send(enc, [lines[i] for i in kept], [ids[i] for i in kept])
        for line, reason, detail in source.rejects.rows:
            session.add_skipped(line, str(line), reason)
            log.warning("line %d skipped: %s (%s)", line, reason, detail)
        session.wait(args.timeout)
        session.write(Path(args.out))
        for line, local_id in session.unanswered():
            print(f"no reply: line {line} (local id {local_id})", file=sys.stderr)
        r = session.report
        for reason, n in r.errors.items():
            print(f"error replies: {n:,} x {reason}", file=sys.stderr)
        print(f"scored {r.answered:,} of {r.sent:,} sent; {sum(r.errors.values()):,} error replies; "
              f"{r.no_reply:,} without a reply after {args.timeout:g}s; {r.skipped:,} input rows skipped; "
              f"written to {args.out}", file=sys.stderr)
        return r


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    p = argparse.ArgumentParser(prog="hashbridge score", description=(
        "Score local records with the learner's scorer: only hashed indices and random request ids "
        "leave this machine; the answers are joined back to the local ids here."))
    p.add_argument("--input", required=True, help="CSV, Parquet or JSON lines file of records to score")
    p.add_argument("--out", required=True, help="CSV to write: local_id, probability, model_version, status")
    p.add_argument("--schema", required=True)
    p.add_argument("--key", help="key file (not needed in mmh3 insecure mode)")
    p.add_argument("--format", choices=["csv", "parquet", "jsonl"])
    p.add_argument("--skip-rows", type=int, default=0)
    p.add_argument("--rare-prime", metavar="FILE",
                   help="with [rare] in the schema: prime the rare-value windows from this file (the training "
                        "input, CSV/Parquet/JSON lines by suffix); default: the first rows of --input")
    p.add_argument("--bootstrap", help="cluster (default $HASHBRIDGE_BOOTSTRAP)")
    p.add_argument("--topic-prefix", help="topic prefix (default $HASHBRIDGE_TOPIC_PREFIX or hb.)")
    p.add_argument("--frame-records", type=int, default=1024, help="records per score frame")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds to wait without a new reply before reporting the rest as unanswered")
    p.add_argument("--no-create-topics", action="store_true")
    args = p.parse_args(argv)
    kafka = KafkaSettings.from_env(bootstrap=args.bootstrap, prefix=args.topic_prefix)
    try:
        if not args.no_create_topics:
            ensure_pipeline_topics(kafka)
        report = score_file(args, kafka)
    except ConfigError as exc:
        print(f"hashbridge score: {exc}", file=sys.stderr)
        return 2
    except HashbridgeError as exc:
        print(f"hashbridge score: {exc}", file=sys.stderr)
        return 1
    return 0 if report.no_reply == 0 and not report.errors else 1


if __name__ == "__main__":
    sys.exit(main())
