"""``hashbridge status`` on a real broker: known frames, commits, dead letters and models in, right counts out."""
from __future__ import annotations

import json
import time
import uuid

import numpy as np
import pytest
from confluent_kafka import TopicPartition
from prometheus_client import CollectorRegistry, start_http_server
from rich.console import Console

from hashbridge import status as status_cli
from hashbridge.localkafka import free_port
from hashbridge.statusdata import Status, gather
from shared.clients import ensure_pipeline_topics, make_consumer, make_producer
from shared.deadletter import dead_letter_headers
from shared.frames import encode_train
from shared.hashspec import Algorithm, SpecId
from shared.models import ModelPublisher, ModelSnapshot
from shared.settings import KafkaSettings, Topics

SPEC = SpecId(Algorithm.BLAKE2B_KEYED, 4, False, b"statusid")
FRAMES = {0: 5, 1: 3, 2: 2}  # train frames per partition
COMMITS = {0: 4, 1: 1}  # the group's committed next offsets; partition 2: none
DEAD = {"bad_magic": 2, "spec_mismatch": 1}


def _frame(n: int) -> bytes:
    labels = np.arange(n, dtype=np.uint8) % 2
    offsets = np.arange(n + 1, dtype=np.uint32)
    return encode_train(SPEC, labels, offsets, np.zeros(n, dtype=np.uint32))


@pytest.fixture(scope="module")
def pipeline(kafka_bootstrap: str) -> tuple[KafkaSettings, str]:
    """A pipeline's topics under a unique prefix, filled once for every test of this module."""
    settings = KafkaSettings(bootstrap=kafka_bootstrap, topics=Topics(f"t{uuid.uuid4().hex[:12]}."))
    t = settings.topics
    ensure_pipeline_topics(settings, partitions=3)
    producer = make_producer(settings)
    for partition, n in FRAMES.items():
        for _ in range(n):
            producer.produce(t.train, value=_frame(10), partition=partition)
    offset = 0
    for reason, n in DEAD.items():
        for _ in range(n):
            headers = dead_letter_headers(reason, "test", t.train, 0, offset, "trainer")
            producer.produce(t.dlq, value=b"junk", headers=headers)
            offset += 1
    assert producer.flush(30) == 0
    group = f"hb-status-test-{uuid.uuid4().hex[:8]}"
    consumer = make_consumer(settings, group)
    consumer.commit(offsets=[TopicPartition(t.train, p, o) for p, o in COMMITS.items()], asynchronous=False)
    consumer.close()
    publisher = ModelPublisher(settings, keep=2)
    for version in (1, 2, 3):
        publisher.publish(ModelSnapshot(version, SPEC, np.zeros(16, np.float32), 0.0, 100 * version,
                                        time.time()))
    publisher.close()
    return settings, group


def _wait_for(settings: KafkaSettings, group: str, **kw: object) -> Status:
    """Status once the broker shows the commits (offset commits are visible shortly after)."""
    deadline = time.monotonic() + 30
    while True:
        st = gather(settings, timeout=10, **kw)  # type: ignore[arg-type]
        if st.group(group) is not None or time.monotonic() > deadline:
            return st


def test_counts_lag_dead_letters_and_model(pipeline: tuple[KafkaSettings, str]) -> None:
    settings, group = pipeline
    t = settings.topics
    st = _wait_for(settings, group)
    assert st.errors == ()
    train = st.topic(t.train)
    assert train is not None and train.exists
    assert {p.partition: p.messages for p in train.partitions} == FRAMES
    assert train.messages == sum(FRAMES.values())
    assert st.topic(t.score).messages == 0  # type: ignore[union-attr]
    assert all(x.exists for x in st.topics)

    g = st.group(group)
    assert g is not None
    lags = {p.partition: p.lag for p in g.partitions}
    assert lags == {0: 1, 1: 2, 2: 2}  # partition 2: nothing committed, all of it is lag
    assert {p.partition: p.committed for p in g.partitions} == {0: 4, 1: 1, 2: None}
    assert g.lag == 5 and g.members == 0

    assert st.dlq is not None
    assert st.dlq.total == 3 and st.dlq.by_reason == DEAD and st.dlq.by_service == {"trainer": 3}
    assert st.model is not None
    assert (st.model.version, st.model.records_seen, st.model.bits) == (3, 300, 4)
    assert st.model.key_id == SPEC.key_id_hex and st.model.live_versions == (2, 3)
    assert st.model.age_seconds is not None and st.model.age_seconds >= 0


def test_only_named_groups(pipeline: tuple[KafkaSettings, str]) -> None:
    settings, group = pipeline
    assert _wait_for(settings, group, groups=[group]).group(group) is not None
    assert gather(settings, groups=["no-such-group-" + uuid.uuid4().hex], timeout=10).groups == ()


def test_cli_json_with_a_metrics_scrape(pipeline: tuple[KafkaSettings, str],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    from trainer.metrics import TrainerMetrics  # the real names, so a rename breaks this test

    settings, group = pipeline
    _wait_for(settings, group)
    metrics = TrainerMetrics(CollectorRegistry())
    metrics.auc.labels("overall").set(0.81)
    metrics.logloss.labels("recent").set(0.42)
    metrics.version.set(7)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=metrics.registry)
    try:
        rc = status_cli.main(["--bootstrap", settings.bootstrap, "--topic-prefix", settings.topics.prefix,
                              "--trainer-metrics", f"http://127.0.0.1:{port}/metrics",
                              "--scorer-metrics", f"http://127.0.0.1:{free_port()}/metrics", "--json"])
    finally:
        server.shutdown()
        thread.join(10)
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    topics = {x["name"]: x for x in data["topics"]}
    assert topics[settings.topics.train]["messages"] == sum(FRAMES.values())
    groups = {x["group"]: x for x in data["groups"]}
    assert groups[group]["lag"] == 5
    assert data["dlq"]["by_reason"] == DEAD
    assert data["model"]["version"] == 3
    trainer = data["scrapes"]["trainer"]
    assert trainer["ok"] and trainer["values"]["hb_trainer_model_version"] == 7
    assert trainer["labelled"]["hb_trainer_progressive_auc"]["window=overall"] == pytest.approx(0.81)
    assert not data["scrapes"]["scorer"]["ok"]  # nothing listens there: reported, not raised
    assert any(e.startswith("scorer metrics:") for e in data["errors"])


def test_tables_render(pipeline: tuple[KafkaSettings, str]) -> None:
    settings, group = pipeline
    console = Console(record=True, width=200)
    console.print(status_cli.render(_wait_for(settings, group)))
    text = console.export_text()
    for needle in (settings.topics.train, group, "bad_magic", "live versions"):
        assert needle in text
