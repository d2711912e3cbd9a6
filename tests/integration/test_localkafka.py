"""The project's own Kafka: messages go through, the CLI starts and stops it, failures explain."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from hashbridge.kafkaproc import Cluster
from hashbridge.kafkaruntime import HOST, MAX_MESSAGE_BYTES
from hashbridge.localkafka import (BOOTSTRAP_ENV, free_port, resolve_bootstrap, start_cluster,
                                   stop_cluster)
from shared.errors import BrokerStartError

if TYPE_CHECKING:
    from conftest import TopicFactory  # tests/integration/conftest.py

CONSUME_TIMEOUT = 30.0


def _produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]],
             **config: object) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                         "message.max.bytes": MAX_MESSAGE_BYTES, **config})
    errors: list[object] = []
    for key, value in messages:
        producer.produce(topic, value, key, on_delivery=lambda err, _msg: err and errors.append(err))
    assert producer.flush(CONSUME_TIMEOUT) == 0
    assert errors == []


def _consume(bootstrap: str, topic: str, group: str, count: int) -> list[tuple[bytes, bytes]]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    received: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + CONSUME_TIMEOUT
    try:
        while len(received) < count and time.monotonic() < deadline:
            for msg in consumer.consume(count - len(received), timeout=1.0):
                if msg.error():
                    raise KafkaException(msg.error())
                received.append((msg.key(), msg.value()))
    finally:
        consumer.close()
    return received


def test_bootstrap_from_the_environment_starts_nothing(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    monkeypatch.setenv(BOOTSTRAP_ENV, "broker-a:9092,broker-b:9092")
    with resolve_bootstrap(use_docker=True, data_dir=tmp_path) as lease:
        assert (lease.bootstrap, lease.source, lease.cluster) == (
            "broker-a:9092,broker-b:9092", "env", None)
    assert list(tmp_path.iterdir()) == []


def test_messages_round_trip(kafka_bootstrap: str, unique_topic: str, unique_group: str) -> None:
    sent = [(f"k{i}".encode(), f"v{i}".encode()) for i in range(20)]
    _produce(kafka_bootstrap, unique_topic, sent)
    assert sorted(_consume(kafka_bootstrap, unique_topic, unique_group, len(sent))) == sorted(sent)


def test_large_frame_is_accepted(kafka_bootstrap: str, topic_factory: TopicFactory,
                                 unique_group: str) -> None:
    """Frames carry thousands of records: an 8 MiB message must pass the broker's limits."""
    topic = topic_factory(1)
    frame = os.urandom(8 * 1024 * 1024)
    _produce(kafka_bootstrap, topic, [(b"big", frame)])
    assert _consume(kafka_bootstrap, topic, unique_group, 1) == [(b"big", frame)]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("hashbridge")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "hashbridge.cli"]
    return subprocess.run([*cmd, "kafka", *args], capture_output=True, text=True, timeout=120)


def test_cli_up_status_down_twice(tmp_path: Path) -> None:
    port, data = str(free_port()), str(tmp_path / "kafka")
    try:
        for _ in range(2):
            up = _cli("up", "--port", port, "--data-dir", data)
            assert up.returncode == 0, up.stderr
            assert f"bootstrap: {HOST}:{port}" in up.stdout
            again = _cli("up", "--port", port, "--data-dir", data)
            assert again.returncode == 0 and "already running" in again.stdout, again.stderr
            status = _cli("status", "--data-dir", data)
            assert status.returncode == 0 and "answering" in status.stdout, status.stdout
            down = _cli("down", "--data-dir", data)
            assert down.returncode == 0 and "stopped" in down.stdout, down.stderr
            status = _cli("status", "--data-dir", data)
            assert status.returncode == 1 and "not running" in status.stdout
        assert "not running" in _cli("down", "--data-dir", data).stdout  # idempotent
    finally:
        stop_cluster(data)  # never leave a broker behind when an assertion fails


def test_down_wipe_deletes_only_a_data_directory_of_ours(tmp_path: Path) -> None:
    """``down --wipe`` stops the broker and deletes its data directory (the local broker keeps
    every topic forever); a directory without the tool's state file is refused and kept."""
    data = tmp_path / "kafka"
    try:
        assert _cli("up", "--port", str(free_port()), "--data-dir", str(data)).returncode == 0
        status = _cli("status", "--data-dir", str(data), "--json")
        assert json.loads(status.stdout)["data_bytes"] > 0
        down = _cli("down", "--data-dir", str(data), "--wipe")
        assert down.returncode == 0 and "stopped" in down.stdout and "deleted" in down.stdout, down.stderr
        assert not data.exists()
    finally:
        stop_cluster(data)
    other = tmp_path / "not-ours"
    other.mkdir()
    (other / "keep.txt").write_text("user data")
    refused = _cli("down", "--data-dir", str(other), "--wipe")
    assert refused.returncode == 2 and "not a hashbridge data directory" in refused.stderr
    assert (other / "keep.txt").read_text() == "user data"


def test_busy_port_fails_clearly(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind((HOST, 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(BrokerStartError) as caught:
            start_cluster(1, port=port, data_dir=tmp_path)
        cli = _cli("up", "--port", str(port), "--data-dir", str(tmp_path))
    assert f"port {port}" in str(caught.value)
    assert str(tmp_path / "node-1" / "server.log") in str(caught.value)
    assert cli.returncode == 1 and f"port {port}" in cli.stderr


def test_broker_crash_names_log_and_its_last_lines(tmp_path: Path) -> None:
    with pytest.raises(BrokerStartError) as caught:
        start_cluster(1, port=free_port(), data_dir=tmp_path,
                      extra_config={"authorizer.class.name": "no.such.Authorizer"})
    message = str(caught.value)
    assert "exited with code" in message
    assert str(tmp_path / "node-1" / "server.log") in message
    assert "no.such.Authorizer" in message
    assert Cluster.attach(tmp_path).running() == {}  # type: ignore[union-attr]


def test_sasl_plain_listener(tmp_path: Path) -> None:
    with start_cluster(1, port=free_port(), data_dir=tmp_path,
                       sasl_users={"alice": "alice-secret"}, detach=False) as cluster:
        assert cluster.sasl_bootstrap is not None

        def admin(password: str) -> AdminClient:
            return AdminClient({"bootstrap.servers": cluster.sasl_bootstrap,
                                "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
                                "sasl.username": "alice", "sasl.password": password,
                                "log_level": 0})

        assert admin("alice-secret").list_topics(timeout=20).brokers
        with pytest.raises(KafkaException):
            admin("wrong").list_topics(timeout=5)
        assert AdminClient({"bootstrap.servers": cluster.bootstrap}).list_topics(timeout=20).brokers
    assert cluster.running() == {}


@pytest.mark.slow
def test_cluster3_survives_a_killed_leader(kafka_cluster3: Cluster,
                                           cluster3_topic_factory: TopicFactory,
                                           unique_group: str) -> None:
    topic = cluster3_topic_factory(3)
    admin = AdminClient({"bootstrap.servers": kafka_cluster3.bootstrap})
    partition = admin.list_topics(topic, timeout=20).topics[topic].partitions[0]
    assert len(partition.replicas) == 3
    before = [(b"before", str(i).encode()) for i in range(10)]
    _produce(kafka_cluster3.bootstrap, topic, before)

    kafka_cluster3.kill_broker(partition.leader)
    assert partition.leader not in kafka_cluster3.running()
    after = [(b"after", str(i).encode()) for i in range(10)]
    _produce(kafka_cluster3.bootstrap, topic, after, **{"message.timeout.ms": 60000})

    assert kafka_cluster3.start_broker(partition.leader) > 0
    got = _consume(kafka_cluster3.bootstrap, topic, unique_group, 20)
    assert sorted(got) == sorted(before + after)
