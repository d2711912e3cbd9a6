"""The producer's one frozen settings object, from flags with environment fallbacks."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.settings import KafkaSettings

DEFAULT_FRAME_RECORDS = 4096


@dataclass(frozen=True, slots=True)
class ProducerSettings:
    """Where frames go and how they are cut; only :meth:`kafka_config` builds librdkafka config."""

    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    frame_records: int = DEFAULT_FRAME_RECORDS
    partitioning: str = "roundrobin"  # roundrobin | random | key (one random key per run)
    strict: bool = False  # stop at the first bad record instead of counting and skipping it
    metrics_port: int = 0  # 0: no HTTP endpoint
    progress: bool = True
    compression: str = "lz4"
    linger_ms: int = 5
    # after each run (a file), an empty frame with the end-of-input header to every partition: a
    # trainer that has learned up to them checkpoints at once (shared.frames.END_HEADER)
    end_markers: bool = True
    overrides: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.frame_records < 1:
            raise ValueError("frame_records must be >= 1")
        if self.partitioning not in ("roundrobin", "random", "key"):
            raise ValueError("partitioning must be 'roundrobin', 'random' or 'key'")

    def kafka_config(self) -> dict[str, Any]:
        from shared.clients import producer_config  # librdkafka loads here, not at import (start-up)

        return producer_config(self.kafka, **{"compression.type": self.compression,
                                              "linger.ms": self.linger_ms, **dict(self.overrides)})
