"""``hashbridge dlq``: list the dead-letter records of the DLQ topic and count them per reason.

The topic is read with ``assign`` from each partition's first offset to the end offset it had
when the command started, without joining a consumer group or committing anything, so listing
never moves anyone's offsets. Only the headers written by :mod:`shared.deadletter` are shown
(reason, source position, service, detail) and the payload's size: never the payload itself.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, TextIO

from confluent_kafka import Consumer, KafkaException, TopicPartition

from shared import deadletter as dl
from shared.clients import consumer_config
from shared.errors import KafkaError
from shared.settings import ENV_BOOTSTRAP, ENV_PREFIX, KafkaSettings

DEFAULT_LIMIT = 20
DEFAULT_TIMEOUT = 30.0
BATCH = 500


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record of the DLQ topic, as its headers describe it."""

    partition: int
    offset: int
    timestamp_ms: int
    reason: str
    service: str
    source_topic: str
    source_partition: int | None
    source_offset: int | None
    detail: str
    size: int

    @classmethod
    def from_message(cls, msg: Any) -> "DeadLetter":
        h = dl.headers_dict(msg.headers())
        _, ts = msg.timestamp()
        value = msg.value()
        return cls(partition=msg.partition(), offset=msg.offset(), timestamp_ms=int(ts),
                   reason=h.get(dl.REASON, "?"), service=h.get(dl.SERVICE, "?"),
                   source_topic=h.get(dl.SOURCE_TOPIC, "?"),
                   source_partition=_int_or_none(h.get(dl.SOURCE_PARTITION)),
                   source_offset=_int_or_none(h.get(dl.SOURCE_OFFSET)),
                   detail=h.get(dl.DETAIL, ""), size=0 if value is None else len(value))


@dataclass(frozen=True, slots=True)
class Listing:
    topic: str
    total: int
    counts: dict[str, int]
    records: list[DeadLetter]  # the newest ``limit`` records, oldest first


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def read_dead_letters(settings: KafkaSettings, limit: int = DEFAULT_LIMIT,
                      timeout: float = DEFAULT_TIMEOUT) -> Listing:
    """Read the whole DLQ topic as it stands now; keep the newest ``limit`` records (0: all)."""
    topic = settings.topics.dlq
    # librdkafka wants a group id even for assign(); this one is never joined nor committed to
    consumer = Consumer(consumer_config(settings, f"hb-dlq-list-{uuid.uuid4().hex}",
                                        **{"enable.auto.commit": False}))
    try:
        meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            return Listing(topic, 0, {}, [])
        ends: dict[int, int] = {}
        start: list[TopicPartition] = []
        for p in sorted(meta.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            if high > low:
                ends[p] = high
                start.append(TopicPartition(topic, p, low))
        counts: Counter[str] = Counter()
        records: list[DeadLetter] = []
        total = 0
        if start:
            consumer.assign(start)
        deadline = time.monotonic() + timeout
        while ends:
            if time.monotonic() > deadline:
                raise KafkaError(f"could not read {topic} to its end within {timeout:.0f}s")
            for msg in consumer.consume(BATCH, timeout=0.5):
                if msg.error() is not None:
                    if msg.error().fatal():
                        raise KafkaError(f"reading {topic}: {msg.error()}")
                    continue
                p, off = msg.partition(), msg.offset()
                if p not in ends or off >= ends[p]:
                    continue  # written after we started: not part of this listing
                rec = DeadLetter.from_message(msg)
                counts[rec.reason] += 1
                total += 1
                records.append(rec)
                if limit and len(records) > 4 * limit:
                    records = records[-limit:]
                if off + 1 >= ends[p]:
                    del ends[p]
        records.sort(key=lambda r: (r.timestamp_ms, r.partition, r.offset))
        if limit:
            records = records[-limit:]
        return Listing(topic, total, dict(counts.most_common()), records)
    finally:
        consumer.close()


def _print_text(listing: Listing, out: TextIO) -> None:
    if not listing.total:
        print(f"no dead letters in {listing.topic}", file=out)
        return
    shown = len(listing.records)
    print(f"{listing.total} dead letter(s) in {listing.topic}"
          + (f", the newest {shown} shown" if shown < listing.total else ""), file=out)
    for r in listing.records:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.timestamp_ms / 1000)) if r.timestamp_ms > 0 else "-"
        print(f"  {r.partition}:{r.offset}  {when}Z  {r.reason:<20} {r.service:<8} "
              f"from {r.source_topic}[{r.source_partition}]@{r.source_offset}  {r.size} B  {r.detail}", file=out)
    print("by reason:", file=out)
    width = max(len(k) for k in listing.counts)
    for reason, n in listing.counts.items():
        print(f"  {reason:<{width}}  {n}", file=out)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hashbridge dlq",
        description="List the dead-letter records of the DLQ topic and count them per reason.")
    p.add_argument("--bootstrap", help=f"Kafka bootstrap servers (default: ${ENV_BOOTSTRAP}, else localhost:9092)")
    p.add_argument("--topic-prefix", "--prefix", dest="prefix", help=f"topic prefix (default: ${ENV_PREFIX}, else 'hb.')")
    p.add_argument("--limit", type=int, default=DEFAULT_LIMIT,
                   help=f"show the newest N records (default {DEFAULT_LIMIT}; 0 shows all); counts cover all")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds to reach the end of the topic")
    return p


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    args = _parser().parse_args(argv)
    out = sys.stdout if out is None else out
    if args.limit < 0:
        print("hashbridge dlq: --limit must be >= 0", file=sys.stderr)
        return 2
    settings = KafkaSettings.from_env(bootstrap=args.bootstrap, prefix=args.prefix)
    try:
        listing = read_dead_letters(settings, limit=args.limit, timeout=args.timeout)
    except (KafkaError, KafkaException) as exc:
        print(f"hashbridge dlq: {exc}", file=sys.stderr)
        return 1
    if args.json:
        doc = {"topic": listing.topic, "total": listing.total, "counts": listing.counts,
               "records": [asdict(r) for r in listing.records]}
        print(json.dumps(doc, indent=1), file=out)
    else:
        _print_text(listing, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
