"""Integration fixtures: one real Kafka for the session and a unique topic per test.

``kafka_bootstrap`` comes from :func:`hashbridge.localkafka.resolve_bootstrap`:
``$HASHBRIDGE_BOOTSTRAP`` if set, else an ``apache/kafka`` container when a Docker engine
answers, else the project's own broker started on a free port in a temporary data dir (and
stopped at the end of the session). ``kafka_cluster3`` is a local 3-node cluster for fault
tests, started only when a test asks for it. Every test in this directory is marked ``kafka``.
"""
from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from hashbridge.kafkaproc import Cluster
from hashbridge.localkafka import KafkaLease, free_port, resolve_bootstrap, start_cluster

INTEGRATION_DIR = Path(__file__).resolve().parent
TOPIC_TIMEOUT = 30.0
CLUSTER3_TIMEOUT = 120.0  # three JVMs on two cores


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_DIR in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.kafka)


def _unique_name(kind: str, request: pytest.FixtureRequest) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name)[:60].strip("-")
    return f"hb-{kind}-{slug}-{uuid.uuid4().hex[:8]}"


class TopicFactory:
    """Creates uniquely named topics on one cluster, waits until they have leaders, and deletes
    them at teardown. ``replication=-1`` takes the broker default (1, or 3 on the 3-node cluster).
    """

    def __init__(self, bootstrap: str, request: pytest.FixtureRequest) -> None:
        self.admin = AdminClient({"bootstrap.servers": bootstrap})
        self._request = request
        self.created: list[str] = []

    def __call__(self, partitions: int = 4, *, replication: int = -1,
                 config: Mapping[str, str] | None = None, name: str | None = None) -> str:
        topic = name or _unique_name("t", self._request)
        new = NewTopic(topic, num_partitions=partitions, replication_factor=replication,
                       config=dict(config or {}))
        self.admin.create_topics([new], operation_timeout=TOPIC_TIMEOUT)[topic].result(TOPIC_TIMEOUT)
        self.created.append(topic)
        self._wait_for_leaders(topic, partitions)
        return topic

    def _wait_for_leaders(self, topic: str, partitions: int) -> None:
        deadline = time.monotonic() + TOPIC_TIMEOUT
        while True:
            metadata = self.admin.list_topics(topic, timeout=TOPIC_TIMEOUT).topics[topic]
            led = [p for p in metadata.partitions.values() if p.leader >= 0]
            if metadata.error is None and len(led) == partitions:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {topic} has {len(led)}/{partitions} led partitions")
            time.sleep(0.05)  # back-off between metadata requests, not a guess at readiness

    def delete_all(self) -> None:
        if not self.created:
            return
        futures = self.admin.delete_topics(self.created, operation_timeout=TOPIC_TIMEOUT)
        for future in futures.values():
            try:
                future.result(TOPIC_TIMEOUT)
            except Exception:  # noqa: BLE001 - already gone, or the test stopped the broker
                pass
        self.created.clear()


@pytest.fixture(scope="session")
def kafka_lease(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaLease]:
    """The session's Kafka and how it was found (``.source``: env, docker or local)."""
    lease = resolve_bootstrap(use_docker=True, data_dir=tmp_path_factory.mktemp("kafka"),
                              port=free_port(), detach=False)
    yield lease
    lease.close()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_lease: KafkaLease) -> str:
    """``bootstrap.servers`` of the session's Kafka."""
    return kafka_lease.bootstrap


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": kafka_bootstrap})


@pytest.fixture
def topic_factory(kafka_bootstrap: str, request: pytest.FixtureRequest) -> Iterator[TopicFactory]:
    """``topic_factory(partitions=4, replication=-1, config=None) -> name``; deleted after."""
    factory = TopicFactory(kafka_bootstrap, request)
    yield factory
    factory.delete_all()


@pytest.fixture
def unique_topic(topic_factory: TopicFactory) -> str:
    """A new topic with 4 partitions, deleted after the test."""
    return topic_factory(4)


@pytest.fixture
def unique_group(request: pytest.FixtureRequest) -> str:
    """A consumer group id no other test uses."""
    return _unique_name("g", request)


@pytest.fixture(scope="session")
def _cluster3_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = start_cluster(3, port=free_port(), data_dir=tmp_path_factory.mktemp("kafka3"),
                            timeout=CLUSTER3_TIMEOUT, detach=False)
    yield cluster
    cluster.stop()


@pytest.fixture
def kafka_cluster3(_cluster3_session: Cluster) -> Cluster:
    """The session's local 3-node KRaft cluster (replication 3, min ISR 2), every node up.

    Always local, even with ``$HASHBRIDGE_BOOTSTRAP``: fault tests kill and restart brokers
    with ``kill_broker(id)`` / ``start_broker(id)`` (ids are Kafka broker ids 1..3). A node a
    previous test left down is started again here.
    """
    for node_id in _cluster3_session.node_ids:
        _cluster3_session.start_broker(node_id, timeout=CLUSTER3_TIMEOUT)
    return _cluster3_session


@pytest.fixture
def cluster3_topic_factory(kafka_cluster3: Cluster,
                           request: pytest.FixtureRequest) -> Iterator[TopicFactory]:
    """Like ``topic_factory``, on the 3-node cluster (replication 3 by default)."""
    factory = TopicFactory(kafka_cluster3.bootstrap, request)
    yield factory
    factory.delete_all()
