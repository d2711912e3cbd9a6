"""End-of-input markers: one per partition after the frames, not counted as frames, and never a
reason to fail a run whose records were sent (the real broker: tests/integration/test_producer_watch.py)."""
from __future__ import annotations

import logging
from types import SimpleNamespace

from confluent_kafka import KafkaException

from producer.metrics import ProducerMetrics
from producer.publisher import FramePublisher
from shared.frames import END_HEADER


class FakeClient:
    """The client calls FramePublisher makes, recorded; ``metadata`` False fails list_topics."""

    def __init__(self, partitions: int = 3, metadata: bool = True, full_once: bool = False) -> None:
        self.calls: list[dict] = []
        self.partitions, self.metadata, self.full_once = partitions, metadata, full_once

    def list_topics(self, topic: str, timeout: float):
        if not self.metadata:
            raise KafkaException("broker down")
        meta = SimpleNamespace(error=None, partitions={p: None for p in range(self.partitions)})
        return SimpleNamespace(topics={topic: meta})

    def produce(self, topic: str, **kwargs) -> None:
        if self.full_once:
            self.full_once = False
            raise BufferError("queue full")
        self.calls.append({"topic": topic, **kwargs})

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        return 0


def test_markers_go_to_every_partition_after_the_frames_and_are_not_frames():
    client = FakeClient(full_once=True)
    pub = FramePublisher({}, "t.train", ProducerMetrics(), "roundrobin", producer=client)  # type: ignore[arg-type]
    pub.send(b"frame-1", 10)
    pub.send(b"frame-2", 5)
    pub.mark_end(b"empty")
    assert [c["value"] for c in client.calls] == [b"frame-1", b"frame-2", b"empty", b"empty", b"empty"]
    assert [c["partition"] for c in client.calls[2:]] == [0, 1, 2]
    assert all(c["headers"] == [(END_HEADER, b"")] for c in client.calls[2:])
    assert "headers" not in client.calls[0]
    assert pub.stats.frames_sent == 2 and pub.stats.records_sent == 15


def test_markers_that_cannot_be_sent_are_logged_not_raised(caplog):
    pub = FramePublisher({}, "t.train", ProducerMetrics(), "random",  # no partition list until needed
                         producer=FakeClient(metadata=False))  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="producer.publisher"):
        pub.mark_end(b"empty")
    assert "end-of-input markers not sent" in caplog.text
