"""Privacy scan: look for raw values and column names in every byte on a prefix's topics.

Run by the data owner (after ``make demo``, or in a test) with the set of strings that must
never leave home: the distinct values of the raw files and the column names. Every message of
every topic under the prefix is read from the start to its end offset at the time of the scan,
and its value, key and headers are searched.

Two kinds of token, because frames are binary and a short string occurs in random bytes by
chance (a given 3-byte string about once per 16 MiB):

- a text token (anything but a plain number) matches wherever its bytes occur;
- a numeric token (digits, optionally signed or with a decimal point) matches only as a whole
  number written in text: a digit run that starts and ends the field or is framed by text
  punctuation (space, quote, comma, colon, brackets, ...). Random request ids and float bits
  form short ASCII digit runs now and then; framed by two such bytes they are rare enough.

Findings name where the token was found and its length, never the token itself in ``str()``,
so a scan report can be logged without repeating the data it is looking for.
"""
from __future__ import annotations

import argparse
import csv
import re
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from shared.clients import make_admin, make_consumer
from shared.settings import KafkaSettings

_NUMBER = re.compile(rb"-?\d+(?:\.\d+)?")
_TEXT_EDGE = rb"""\s"',:;=()\[\]{}<>/|"""  # bytes that end a number written in text
_DIGIT_RUN = re.compile(rb"(?:(?<=^)|(?<=[" + _TEXT_EDGE + rb"]))-?\d+(?:\.\d+)?(?=[" + _TEXT_EDGE + rb"]|$)")


@dataclass(frozen=True, slots=True)
class Finding:
    topic: str
    partition: int
    offset: int
    where: str  # "value", "key" or "header:<name>"
    position: int
    token: bytes

    def __str__(self) -> str:
        return (f"{self.topic}[{self.partition}]@{self.offset} {self.where} byte {self.position}: "
                f"a forbidden token of {len(self.token)} bytes")


class Matcher:
    """Finds forbidden tokens in a byte string (see the module docstring for the two kinds)."""

    def __init__(self, forbidden: Iterable[bytes]) -> None:
        tokens = {t for t in forbidden if t}
        self.numbers = {t for t in tokens if _NUMBER.fullmatch(t)}
        texts = sorted(tokens - self.numbers, key=len, reverse=True)
        self.text = re.compile(b"|".join(re.escape(t) for t in texts)) if texts else None

    def find(self, data: bytes) -> list[tuple[int, bytes]]:
        hits = []
        if self.text is not None:
            hits += [(m.start(), m.group()) for m in self.text.finditer(data)]
        if self.numbers:
            hits += [(m.start(), m.group()) for m in _DIGIT_RUN.finditer(data) if m.group() in self.numbers]
        return hits


def _scan_message(matcher: Matcher, msg: object) -> list[Finding]:
    out = []
    parts: list[tuple[str, bytes | None]] = [("value", msg.value()), ("key", msg.key())]  # type: ignore[attr-defined]
    for name, value in msg.headers() or []:  # type: ignore[attr-defined]
        parts.append((f"header:{name}", name.encode() + b"=" + (value or b"")))
    for where, data in parts:
        if data:
            out += [Finding(msg.topic(), msg.partition(), msg.offset(), where, pos, tok)  # type: ignore[attr-defined]
                    for pos, tok in matcher.find(data)]
    return out


def scan_topics(settings: KafkaSettings, forbidden: set[bytes], timeout: float = 120.0
                ) -> tuple[list[Finding], dict[str, int]]:
    """Findings on every topic whose name starts with the settings' prefix; and messages per topic.

    Topics are read with ``assign`` (no group joined, nothing committed) up to the end offsets
    they had when the scan started.
    """
    matcher = Matcher(forbidden)
    prefix = settings.topics.prefix
    meta = make_admin(settings).list_topics(timeout=30).topics
    topics = sorted(t for t in meta if t.startswith(prefix))
    consumer = make_consumer(settings, f"hb-privacyscan-{uuid.uuid4().hex}")
    findings: list[Finding] = []
    counts = {t: 0 for t in topics}
    try:
        ends: dict[tuple[str, int], int] = {}
        start = []
        for t in topics:
            for p in meta[t].partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(t, p), timeout=30)
                if high > low:
                    ends[(t, p)] = high
                    start.append(TopicPartition(t, p, OFFSET_BEGINNING))
        if start:
            consumer.assign(start)
        deadline = time.monotonic() + timeout
        while ends:
            if time.monotonic() > deadline:
                raise TimeoutError(f"privacy scan did not reach the end of {sorted(ends)} in {timeout:.0f} s")
            for msg in consumer.consume(1000, 0.5):
                if msg.error() is not None:
                    continue
                tp = (msg.topic(), msg.partition())
                if tp not in ends or msg.offset() >= ends[tp]:
                    continue
                counts[msg.topic()] += 1
                findings += _scan_message(matcher, msg)
                if msg.offset() + 1 >= ends[tp]:
                    del ends[tp]
    finally:
        consumer.close()
    return findings, counts


def scan_text(lines: Iterable[str], forbidden: set[bytes], words: set[str] = frozenset()) -> list[tuple[int, int]]:
    """(line number, token length) of every forbidden token in log lines; ``words`` (e.g. short
    column names) match only as whole words, since "age" is part of "message"."""
    matcher = Matcher(forbidden)
    word_re = re.compile(r"\b(?:" + "|".join(map(re.escape, sorted(words))) + r")\b") if words else None
    out = []
    for i, line in enumerate(lines, 1):
        out += [(i, len(tok)) for _, tok in matcher.find(line.encode("utf-8", "replace"))]
        if word_re is not None:
            out += [(i, len(m.group())) for m in word_re.finditer(line)]
    return out


def forbidden_from_csv(paths: Sequence[Path], names: Sequence[str], min_len: int = 4,
                       delimiter: str = ",") -> set[bytes]:
    """Distinct stripped cell values of at least ``min_len`` characters, and the column names."""
    out = {n.encode() for n in names if len(n) >= min_len}
    for path in paths:
        with open(path, newline="", encoding="utf-8", errors="replace") as f:
            for row in csv.reader(f, delimiter=delimiter):
                for cell in row:
                    for text in {cell.strip(), cell.strip().rstrip(".")}:  # adult.test writes ">50K."
                        if len(text) >= min_len:
                            out.add(text.encode())
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hashbridge.privacyscan", description=(
        "Search every message of a prefix's topics for raw values of CSV files and column names."))
    p.add_argument("--bootstrap", help="cluster (default $HASHBRIDGE_BOOTSTRAP)")
    p.add_argument("--prefix", help="topic prefix (default $HASHBRIDGE_TOPIC_PREFIX or hb.)")
    p.add_argument("--csv", action="append", required=True, help="a raw data file (repeatable)")
    p.add_argument("--names", default="", help="comma-separated column names to look for as well")
    p.add_argument("--min-len", type=int, default=4)
    args = p.parse_args(argv)
    settings = KafkaSettings.from_env(args.bootstrap, args.prefix)
    names = [n for n in args.names.split(",") if n]
    findings, counts = scan_topics(settings, forbidden_from_csv([Path(c) for c in args.csv], names, args.min_len))
    print(f"scanned {sum(counts.values())} messages on {len(counts)} topics: {len(findings)} findings")
    for f in findings[:50]:
        print(f"  {f}")
    return 1 if findings else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
