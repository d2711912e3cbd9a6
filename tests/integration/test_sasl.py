"""Transport security: a SASL/PLAIN listener refuses clients without credentials and serves ours.

The credentials reach the clients the way every service gets them: ``HASHBRIDGE_KAFKA_*``
variables read by :meth:`KafkaSettings.from_env`, turned into librdkafka options only by
:mod:`shared.clients`. A private broker is started with the launcher's ``sasl_users`` option.
(The launcher keeps its PLAINTEXT listener beside the SASL one; locking that down takes ACLs and
listener choice in the deployment, which this test does not claim to show.)
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import KafkaException
from confluent_kafka import KafkaError as CKError

from hashbridge.localkafka import free_port, start_cluster
from shared.clients import ensure_topics, make_admin, make_consumer, make_producer
from shared.frames import Kind, decode, encode_train
from shared.hashspec import Algorithm, SpecId, mmh3_key_id
from shared.settings import KafkaSettings

USER, PASSWORD = "owner", "s3cret-Pw"
SPEC = SpecId(Algorithm.MMH3_PUBLIC, 12, False, mmh3_key_id(0))
REPO = Path(__file__).resolve().parents[2]


def sasl_env(bootstrap: str, prefix: str, password: str = PASSWORD) -> dict[str, str]:
    return {"HASHBRIDGE_BOOTSTRAP": bootstrap, "HASHBRIDGE_TOPIC_PREFIX": prefix,
            "HASHBRIDGE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "HASHBRIDGE_KAFKA_SASL_MECHANISM": "PLAIN",
            "HASHBRIDGE_KAFKA_SASL_USERNAME": USER, "HASHBRIDGE_KAFKA_SASL_PASSWORD": password}


@pytest.fixture(scope="module")
def sasl_cluster(tmp_path_factory: pytest.TempPathFactory):
    cluster = start_cluster(1, port=free_port(), data_dir=tmp_path_factory.mktemp("kafka-sasl"),
                            sasl_users={USER: PASSWORD})
    yield cluster
    cluster.stop()


def test_client_without_credentials_is_refused(sasl_cluster) -> None:
    prefix = f"sasl{uuid.uuid4().hex[:8]}."
    plain = KafkaSettings.from_env(env={"HASHBRIDGE_BOOTSTRAP": sasl_cluster.sasl_bootstrap})
    with pytest.raises(KafkaException):
        make_admin(plain, log_level=0).list_topics(timeout=5)
    wrong = KafkaSettings.from_env(env=sasl_env(sasl_cluster.sasl_bootstrap, prefix, "wrong"))
    with pytest.raises(KafkaException):
        make_admin(wrong, log_level=0).list_topics(timeout=5)
    errors: list[CKError] = []
    producer = make_producer(wrong, log_level=0, error_cb=errors.append, **{"message.timeout.ms": 5000})
    failed: list[CKError] = []
    producer.produce("anything", value=b"x", on_delivery=lambda err, _m: failed.append(err))
    producer.flush(15)
    codes = {e.code() for e in errors}
    print(f"\nrefused: producer errors {sorted({e.name() for e in errors})}, delivery {failed}")
    assert CKError._AUTHENTICATION in codes or CKError.SASL_AUTHENTICATION_FAILED in codes
    assert failed and failed[0] is not None


def test_client_with_credentials_from_env_produces_and_consumes_a_frame(sasl_cluster) -> None:
    prefix = f"sasl{uuid.uuid4().hex[:8]}."
    ks = KafkaSettings.from_env(env=sasl_env(sasl_cluster.sasl_bootstrap, prefix))
    assert ks.security["security.protocol"] == "SASL_PLAINTEXT"
    assert PASSWORD not in json.dumps(ks.redacted())
    ensure_topics(ks, {ks.topics.train: 1, ks.topics.dlq: 1})
    frame = encode_train(SPEC, np.array([1, 0], np.uint8), np.array([0, 2, 3], np.uint32),
                         np.array([5, 9, 17], np.uint32))
    producer = make_producer(ks)
    producer.produce(ks.topics.train, key=b"k", value=frame)
    assert producer.flush(30) == 0
    consumer = make_consumer(ks, f"g-{prefix}")
    try:
        consumer.subscribe([ks.topics.train])
        got = None
        for _ in range(60):  # at most 60 polls of 1 s each
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                got = msg
                break
        assert got is not None, "no message within 60 s"
    finally:
        consumer.close()
    back = decode(got.value(), expect=Kind.TRAIN)
    assert back.spec == SPEC and back.labels.tolist() == [1, 0] and back.indices.tolist() == [5, 9, 17]

    # a hashbridge command picks the credentials up from the environment alone
    env = {**os.environ, **sasl_env(sasl_cluster.sasl_bootstrap, prefix)}
    out = subprocess.run([sys.executable, "-m", "hashbridge.cli", "dlq", "--json", "--timeout", "30"],
                         env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["total"] == 0
    assert PASSWORD not in out.stderr + out.stdout
    env["HASHBRIDGE_KAFKA_SASL_PASSWORD"] = "wrong"
    bad = subprocess.run([sys.executable, "-m", "hashbridge.cli", "dlq", "--json", "--timeout", "10"],
                         env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0
