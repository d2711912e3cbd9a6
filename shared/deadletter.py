"""Dead letters: a rejected message goes to ``hb.dlq`` unchanged, with headers saying why."""
from __future__ import annotations

from typing import Any, Callable

from confluent_kafka import Producer

REASON = "hb.reason"
DETAIL = "hb.detail"
SOURCE_TOPIC = "hb.source.topic"
SOURCE_PARTITION = "hb.source.partition"
SOURCE_OFFSET = "hb.source.offset"
SERVICE = "hb.service"


def dead_letter_headers(reason: str, detail: str, topic: str, partition: int, offset: int,
                        service: str) -> list[tuple[str, bytes]]:
    """Headers carry only codec reasons and positions: never a raw value or key material."""
    return [(REASON, reason.encode()), (DETAIL, detail[:500].encode()), (SOURCE_TOPIC, topic.encode()),
            (SOURCE_PARTITION, str(partition).encode()), (SOURCE_OFFSET, str(offset).encode()),
            (SERVICE, service.encode())]


def send_dead_letter(producer: Producer, dlq_topic: str, msg: Any, reason: str, detail: str,
                     service: str, on_delivery: Callable[[Any, Any], None] | None = None) -> None:
    """Forward ``msg`` (a confluent Message) to the dead-letter topic; the caller flushes.
    ``on_delivery`` replaces the producer's own delivery callback for this message."""
    headers = dead_letter_headers(reason, detail, msg.topic(), msg.partition(), msg.offset(), service)
    extra = {} if on_delivery is None else {"on_delivery": on_delivery}
    while True:
        try:
            producer.produce(dlq_topic, value=msg.value(), key=msg.key(), headers=headers, **extra)
            return
        except BufferError:
            producer.poll(0.1)


def headers_dict(headers: list[tuple[str, bytes]] | None) -> dict[str, str]:
    return {k: (v or b"").decode("utf-8", "replace") for k, v in (headers or [])}
