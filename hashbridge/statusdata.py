"""What ``hashbridge status`` shows, gathered from the cluster and the services' /metrics pages.

Read-only by construction: offsets come from the admin API (``list_offsets``,
``list_consumer_group_offsets``), the dead-letter and models topics are read with ``assign`` by a
consumer that never joins a group nor commits, so looking at a pipeline never changes it.
Everything is plain dataclasses so that ``--json`` and the rich tables show the same data.
"""
from __future__ import annotations

import json
import re
import time
import urllib.request
import uuid
from collections import Counter
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError as ConfluentError, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec
from prometheus_client.parser import text_string_to_metric_families

from shared.clients import make_admin, make_consumer
from shared.deadletter import REASON, SERVICE, headers_dict
from shared.settings import KafkaSettings

_MANIFEST_KEY = re.compile(rb"^manifest/(\d+)$")  # the models topic's key layout (shared.models)
# throwaway groups of readers that assign partitions and never commit: not worth a request each
_SKIP_GROUPS = re.compile(r"^hb-models-(scan|watch)-")
# librdkafka's own error lines would repeat what Status.errors already reports, once per retry
QUIET = {"log_level": 2}


@dataclass(frozen=True, slots=True)
class PartitionOffsets:
    partition: int
    low: int
    high: int

    @property
    def messages(self) -> int:
        return max(self.high - self.low, 0)


@dataclass(frozen=True, slots=True)
class TopicStatus:
    name: str
    exists: bool
    partitions: tuple[PartitionOffsets, ...] = ()

    @property
    def messages(self) -> int:
        return sum(p.messages for p in self.partitions)


@dataclass(frozen=True, slots=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int | None  # None: the group has committed nothing on this partition yet
    high: int
    lag: int


@dataclass(frozen=True, slots=True)
class GroupStatus:
    group: str
    state: str
    members: int
    partitions: tuple[PartitionLag, ...]

    @property
    def lag(self) -> int:
        return sum(p.lag for p in self.partitions)


@dataclass(frozen=True, slots=True)
class ModelStatus:
    """The newest live manifest on the models topic."""

    version: int
    records_seen: int
    created_at: float
    age_seconds: float | None  # None when the manifest has no creation time
    bits: int | None
    key_id: str | None
    live_versions: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class DlqStatus:
    total: int
    by_reason: dict[str, int]
    by_service: dict[str, int]
    scanned: int
    truncated: bool  # more than ``max_messages`` dead letters: counts cover the newest ones


@dataclass(frozen=True, slots=True)
class ScrapeStatus:
    """A service's /metrics page, reduced to what an operator looks at first."""

    url: str
    ok: bool
    error: str | None = None
    values: dict[str, float] = field(default_factory=dict)  # unlabelled samples (counters as _total)
    labelled: dict[str, dict[str, float]] = field(default_factory=dict)  # name -> "k=v,..." -> value


@dataclass(frozen=True, slots=True)
class Status:
    bootstrap: str
    prefix: str
    taken_at: float
    topics: tuple[TopicStatus, ...]
    groups: tuple[GroupStatus, ...]
    model: ModelStatus | None
    dlq: DlqStatus | None
    scrapes: dict[str, ScrapeStatus]
    errors: tuple[str, ...]

    def topic(self, name: str) -> TopicStatus | None:
        return next((t for t in self.topics if t.name == name), None)

    def group(self, name: str) -> GroupStatus | None:
        return next((g for g in self.groups if g.group == name), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with the derived totals (messages, lag) spelled out."""
        d = asdict(self)
        for t, td in zip(self.topics, d["topics"]):
            td["messages"] = t.messages
            for p, pd in zip(t.partitions, td["partitions"]):
                pd["messages"] = p.messages
        for g, gd in zip(self.groups, d["groups"]):
            gd["lag"] = g.lag
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def _results(futures: dict[Any, Future], timeout: float, errors: list[str], what: str) -> dict[Any, Any]:
    out = {}
    for key, fut in futures.items():
        try:
            out[key] = fut.result(timeout)
        except Exception as exc:  # noqa: BLE001 - confluent wraps every broker error in KafkaException
            errors.append(f"{what} {key}: {exc}")
    return out


def topic_offsets(admin: AdminClient, names: Iterable[str], timeout: float,
                  errors: list[str]) -> tuple[TopicStatus, ...]:
    """Low and high watermarks of every partition, two admin requests for all topics."""
    names = list(names)
    meta = admin.list_topics(timeout=timeout).topics
    tps = [TopicPartition(n, p) for n in names if n in meta and meta[n].error is None
           for p in sorted(meta[n].partitions)]
    marks: dict[tuple[str, int], list[int]] = {(tp.topic, tp.partition): [0, 0] for tp in tps}
    if tps:
        for i, spec in enumerate((OffsetSpec.earliest(), OffsetSpec.latest())):
            res = _results(admin.list_offsets({tp: spec for tp in tps}, request_timeout=timeout),
                           timeout, errors, "offsets of")
            for tp, info in res.items():
                marks[(tp.topic, tp.partition)][i] = int(info.offset)
    out = []
    for n in names:
        if n not in meta or meta[n].error is not None:
            out.append(TopicStatus(n, False))
            continue
        parts = tuple(PartitionOffsets(p, *marks[(n, p)]) for p in sorted(meta[n].partitions))
        out.append(TopicStatus(n, True, parts))
    return tuple(out)


def group_lags(admin: AdminClient, topics: Sequence[TopicStatus], timeout: float, errors: list[str],
               only: Sequence[str] | None = None) -> tuple[GroupStatus, ...]:
    """Every group (or ``only`` these) with committed offsets on ``topics``, lag against high marks.

    A partition of a consumed topic without a commit counts all of its messages as lag, like
    ``kafka-consumer-groups``; a group that committed nothing on these topics is left out.
    """
    by_topic = {t.name: t for t in topics if t.exists}
    if only:
        ids = list(only)
    else:
        listing = admin.list_consumer_groups(request_timeout=timeout).result(timeout)
        ids = sorted(g.group_id for g in listing.valid if not _SKIP_GROUPS.match(g.group_id))
    if not ids or not by_topic:
        return ()
    futures = {}
    for gid in ids:  # librdkafka takes one group per request; the requests run concurrently
        futures.update(admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(gid)],
                                                         request_timeout=timeout))
    committed: dict[str, dict[tuple[str, int], int]] = {}
    for gid, res in _results(futures, timeout, errors, "offsets of group").items():
        mine = {(tp.topic, tp.partition): tp.offset for tp in res.topic_partitions or []
                if tp.topic in by_topic and tp.offset >= 0}
        if mine:
            committed[gid] = mine
    if not committed:
        return ()
    described = _results(admin.describe_consumer_groups(list(committed), request_timeout=timeout),
                         timeout, errors, "group")
    out = []
    for gid, offs in sorted(committed.items()):
        rows = []
        for name in sorted({t for t, _ in offs}):
            for p in by_topic[name].partitions:
                c = offs.get((name, p.partition))
                lag = p.high - c if c is not None else p.messages
                rows.append(PartitionLag(name, p.partition, c, p.high, max(lag, 0)))
        d = described.get(gid)
        state = str(getattr(d.state, "name", d.state)).lower() if d is not None else "unknown"
        out.append(GroupStatus(gid, state, len(d.members) if d is not None else 0, tuple(rows)))
    return tuple(out)


def _reader(settings: KafkaSettings) -> Any:
    # never subscribes or commits: the group id only satisfies the client
    return make_consumer(settings, f"hb-status-{uuid.uuid4().hex}", **{"enable.partition.eof": True}, **QUIET)


def _read_range(consumer: Any, topic: str, partition: int, start: int, end: int,
                deadline: float) -> list[Any]:
    """Messages ``start <= offset < end`` of one partition (compaction may leave gaps)."""
    consumer.assign([TopicPartition(topic, partition, start)])
    got: list[Any] = []
    try:
        while time.monotonic() < deadline:
            for msg in consumer.consume(500, min(0.5, max(0.0, deadline - time.monotonic()))):
                if msg.error():
                    if msg.error().code() == ConfluentError._PARTITION_EOF:
                        return got
                    continue
                if msg.offset() >= end:
                    return got
                got.append(msg)
                if msg.offset() >= end - 1:
                    return got
        raise TimeoutError(f"reading {topic}[{partition}] {start}..{end} did not finish in time")
    finally:
        consumer.unassign()


def newest_model(settings: KafkaSettings, models: TopicStatus, timeout: float,
                 now: float | None = None) -> ModelStatus | None:
    """Reads the models topic backwards in doubling windows until it meets a live manifest.

    The tail holds the newest manifest followed by the prune tombstones of old versions, so a
    few dozen records usually suffice and the multi-megabyte chunks of old models are not read.
    """
    if not models.exists or not models.partitions or models.messages == 0:
        return None
    p = models.partitions[0]
    deadline = time.monotonic() + timeout
    consumer = _reader(settings)
    try:
        window = 16
        while True:
            start = max(p.low, p.high - window)
            manifests: dict[int, dict[str, Any] | None] = {}  # version -> manifest, None = tombstone
            for msg in _read_range(consumer, models.name, p.partition, start, p.high, deadline):
                m = _MANIFEST_KEY.match(msg.key() or b"")
                if m:
                    try:
                        manifests[int(m.group(1))] = None if msg.value() is None else json.loads(msg.value())
                    except ValueError:
                        continue
            live = sorted(v for v, m in manifests.items() if m is not None)
            if live:
                m = manifests[live[-1]] or {}
                created = float(m.get("created_at", 0.0))
                age = max((now or time.time()) - created, 0.0) if created > 0 else None
                return ModelStatus(int(m.get("version", live[-1])), int(m.get("records_seen", 0)), created,
                                   age, m.get("bits"), m.get("key_id"), tuple(live))
            if start <= p.low:
                return None
            window *= 4
    finally:
        consumer.close()


def dead_letters(settings: KafkaSettings, dlq: TopicStatus, timeout: float,
                 max_messages: int = 100_000) -> DlqStatus | None:
    """Counts by ``hb.reason`` and ``hb.service`` header; at most the newest ``max_messages``."""
    if not dlq.exists:
        return None
    reasons: Counter[str] = Counter()
    services: Counter[str] = Counter()
    scanned, truncated = 0, False
    deadline = time.monotonic() + timeout
    consumer = _reader(settings)
    try:
        per = max_messages // max(len(dlq.partitions), 1)
        for p in dlq.partitions:
            start = max(p.low, p.high - per)
            truncated |= start > p.low
            if p.high <= start:
                continue
            for msg in _read_range(consumer, dlq.name, p.partition, start, p.high, deadline):
                h = headers_dict(msg.headers())
                reasons[h.get(REASON, "unknown")] += 1
                services[h.get(SERVICE, "unknown")] += 1
                scanned += 1
    finally:
        consumer.close()
    return DlqStatus(dlq.messages, dict(reasons), dict(services), scanned, truncated)


def scrape(url: str, timeout: float) -> ScrapeStatus:
    """Fetch and parse a Prometheus text page; a failure is reported, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - operator's own URL
            text = resp.read().decode("utf-8", "replace")
        values: dict[str, float] = {}
        labelled: dict[str, dict[str, float]] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.labels:
                    key = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                    labelled.setdefault(s.name, {})[key] = float(s.value)
                else:
                    values[s.name] = float(s.value)
        return ScrapeStatus(url, True, None, values, labelled)
    except Exception as exc:  # noqa: BLE001 - connection refused, timeout, bad page: all one answer
        return ScrapeStatus(url, False, f"{type(exc).__name__}: {exc}")


def gather(settings: KafkaSettings, *, metrics_urls: dict[str, str] | None = None,
           groups: Sequence[str] | None = None, timeout: float = 10.0, dlq: bool = True,
           models: bool = True) -> Status:
    """One snapshot of the pipeline under ``settings.topics.prefix``; partial on errors.

    ``metrics_urls`` maps a service name (``trainer``, ``scorer``, ``producer``) to its /metrics
    URL. Errors of one part (a group, a scrape) are listed in ``Status.errors``; only an
    unreachable cluster raises.
    """
    errors: list[str] = []
    t = settings.topics
    admin = make_admin(settings, **QUIET)
    pipeline = [t.train, t.score, t.predictions, t.models, t.dlq, t.deltas]
    meta = admin.list_topics(timeout=timeout).topics
    extra = sorted(n for n in meta if n.startswith(t.prefix) and n not in pipeline)
    topics = topic_offsets(admin, pipeline + extra, timeout, errors)
    try:
        lags = group_lags(admin, topics, timeout, errors, groups)
    except Exception as exc:  # noqa: BLE001 - listing groups needs rights some clusters withhold
        errors.append(f"consumer groups: {exc}")
        lags = ()
    by_name = {x.name: x for x in topics}
    model = dead = None
    if models:
        try:
            model = newest_model(settings, by_name[t.models], timeout)
        except Exception as exc:  # noqa: BLE001
            errors.append(f"models topic: {exc}")
    if dlq:
        try:
            dead = dead_letters(settings, by_name[t.dlq], timeout)
        except Exception as exc:  # noqa: BLE001
            errors.append(f"dead-letter topic: {exc}")
    scrapes = {name: scrape(url, timeout) for name, url in (metrics_urls or {}).items()}
    errors += [f"{name} metrics: {s.error}" for name, s in scrapes.items() if not s.ok]
    return Status(settings.bootstrap, t.prefix, time.time(), topics, lags, model, dead, scrapes, tuple(errors))
