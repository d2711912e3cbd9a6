"""compose.yaml cannot run here (no Docker engine), so its shape is checked instead."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

from hashbridge.kafkaruntime import KAFKA_VERSION, POM, cluster_settings
from hashbridge.localkafka import DOCKER_IMAGE, docker_env_name

REPO = Path(__file__).resolve().parents[2]
APP_SERVICES = ("producer", "trainer", "scorer")
TOPICS = ("hb.train", "hb.score", "hb.predictions", "hb.models", "hb.dlq", "hb.deltas")


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    return compose["services"]  # type: ignore[no-any-return]


def _pom_kafka_version() -> str:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    version = ET.parse(POM).getroot().find("m:properties/m:kafka.version", ns)
    assert version is not None and version.text
    return version.text.strip()


def test_kafka_version_is_the_same_everywhere(services: dict[str, dict[str, Any]]) -> None:
    assert _pom_kafka_version() == KAFKA_VERSION
    assert services["kafka"]["image"] == f"apache/kafka:{KAFKA_VERSION}" == DOCKER_IMAGE
    assert services["topics"]["image"] == services["kafka"]["image"]


def test_images_are_pinned(services: dict[str, dict[str, Any]]) -> None:
    images = [svc["image"] for svc in services.values() if "image" in svc]
    dockerfile = (REPO / "Dockerfile").read_text()
    images += [line.split()[1] for line in dockerfile.splitlines() if line.startswith("FROM ")]
    assert "python:3.11-slim" in images
    for image in images:
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest", image


def test_kafka_is_kraft_with_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    kafka = services["kafka"]
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "KAFKA_CONTROLLER_QUORUM_VOTERS" in env
    assert not any("ZOOKEEPER" in key for key in env)
    assert int(env["KAFKA_MESSAGE_MAX_BYTES"]) >= 16 * 1024 * 1024
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert "kafka-broker-api-versions.sh --bootstrap-server localhost:9092" in " ".join(
        kafka["healthcheck"]["test"])


def test_topics_service_creates_the_pipeline_topics(services: dict[str, dict[str, Any]]) -> None:
    topics = services["topics"]
    assert topics["depends_on"]["kafka"]["condition"] == "service_healthy"
    script = " ".join(topics["command"])
    for topic in TOPICS:
        assert topic in script
    assert "--topic hb.models --partitions 1 --config cleanup.policy=compact" in script


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_wait_for_kafka_and_topics(services: dict[str, dict[str, Any]],
                                                name: str) -> None:
    service = services[name]
    assert service["build"] == "."
    assert service["environment"]["HASHBRIDGE_BOOTSTRAP"] == "kafka:9092"
    assert service["depends_on"] == {"kafka": {"condition": "service_healthy"},
                                     "topics": {"condition": "service_completed_successfully"}}
    command = " ".join(service["command"])
    assert {"producer": "hashbridge produce", "trainer": "hashbridge train --workers 2",
            "scorer": "hashbridge scorer"}[name] in command


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_can_scale(services: dict[str, dict[str, Any]], name: str) -> None:
    assert "container_name" not in services[name]
    assert "ports" not in services[name]


def test_compose_broker_matches_the_local_broker(services: dict[str, dict[str, Any]]) -> None:
    """The Docker broker and the one `hashbridge kafka up` starts behave the same in tests."""
    env = {key: str(value) for key, value in services["kafka"]["environment"].items()}
    settings = {docker_env_name(key): value for key, value in cluster_settings(1).items()}
    shared = set(env) & set(settings)
    assert {"KAFKA_MESSAGE_MAX_BYTES", "KAFKA_AUTO_CREATE_TOPICS_ENABLE",
            "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_NUM_PARTITIONS"} <= shared
    assert {key: env[key] for key in shared} == {key: settings[key] for key in shared}


def test_docker_env_names_follow_the_apache_image() -> None:
    assert docker_env_name("abc.def") == "KAFKA_ABC_DEF"
    assert docker_env_name("abc_def") == "KAFKA_ABC__DEF"
    assert docker_env_name("abc-def") == "KAFKA_ABC___DEF"

