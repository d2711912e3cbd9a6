"""The pipeline's topics under one prefix: created together, deleted together (the demo's cleanup)."""
from __future__ import annotations

import uuid

from confluent_kafka.admin import AdminClient

from shared.clients import delete_pipeline_topics, ensure_pipeline_topics, pipeline_topics
from shared.settings import KafkaSettings, Topics
from trainer.launch import wait_for


def test_delete_pipeline_topics_removes_the_prefix_and_nothing_else(kafka_bootstrap: str) -> None:
    ours = KafkaSettings(kafka_bootstrap, topics=Topics(prefix=f"del{uuid.uuid4().hex[:8]}."))
    other = KafkaSettings(kafka_bootstrap, topics=Topics(prefix=f"keep{uuid.uuid4().hex[:8]}."))
    ensure_pipeline_topics(ours)
    ensure_pipeline_topics(other)
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})

    def names() -> set[str]:
        return set(admin.list_topics(timeout=10).topics)

    assert set(pipeline_topics(ours)) <= names()
    delete_pipeline_topics(ours)
    wait_for(lambda: not set(pipeline_topics(ours)) & names(), 30, "our topics gone")
    assert set(pipeline_topics(other)) <= names()
    delete_pipeline_topics(ours)  # again: nothing left to delete, no error
    delete_pipeline_topics(other)
