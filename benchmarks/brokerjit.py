"""The benchmark broker: the full JIT, warmed up before any part measures through it.

The project's local broker runs C1 only (``-XX:TieredStopAtLevel=1``): it starts in about half the
CPU time, which is right for tests and the demo. A production broker runs the full tiered JIT,
and once C2 has compiled the request paths it costs about half the CPU per request: a bare
produce -> fetch round trip of single-record messages at 1,000/s took 0.78-0.82 of a core with C1
and 0.40-0.47 with warmed C2, on this 2-core machine where that CPU comes out of the services'
share. Measured through a cold C2 broker, the same load is worse than C1 (it compiles during the
measurement), so the harness drives a warm-up load first: small messages at a steady rate and
large frames, produced and fetched, for ``WARM_SECONDS``.
"""
from __future__ import annotations

import os
import time
import uuid

from shared.clients import delete_topics, ensure_topics, make_consumer, make_producer
from shared.settings import KafkaSettings

JVM_ENV = "HASHBRIDGE_KAFKA_JVM_OPTS"
FULL_JIT = "-XX:TieredStopAtLevel=4"  # appended after the runtime's C1-only flag: the last one wins
WARM_SECONDS = 40.0
SMALL_PER_S = 2000
LARGE_BYTES = 512 * 1024


def use_full_jit() -> None:
    """Make brokers started from now on in this process (and its children) use the full JIT,
    unless the caller already chose JVM options."""
    if not os.environ.get(JVM_ENV, "").strip():
        os.environ[JVM_ENV] = FULL_JIT


def warm_up(bootstrap: str, seconds: float = WARM_SECONDS) -> dict[str, float]:
    """Drive produce and fetch paths (small idempotent messages, large frames, a consumer group)
    so the JIT compiles them; returns what was sent. Topics are deleted after."""
    ks = KafkaSettings(bootstrap=bootstrap)
    topic = f"bench-warmup-{uuid.uuid4().hex[:8]}"
    ensure_topics(ks, {topic: 4})
    producer = make_producer(ks, **{"linger.ms": 0, "compression.type": "none", "socket.nagle.disable": True})
    consumer = make_consumer(ks, f"warm-{uuid.uuid4().hex[:8]}", **{
        "fetch.wait.max.ms": 100, "fetch.min.bytes": 1, "socket.nagle.disable": True})
    consumer.subscribe([topic])
    large, small = os.urandom(LARGE_BYTES), b"x" * 120
    sent = got = 0
    t0 = time.monotonic()
    end = t0 + seconds
    try:
        while (now := time.monotonic()) < end:
            due = int((now - t0) * SMALL_PER_S)
            while sent < due:
                # one large frame per 200 small messages: the trainer/producer path as well
                value = large if sent % 200 == 0 else small
                try:
                    producer.produce(topic, key=b"%d" % sent, value=value)
                except BufferError:
                    break
                sent += 1
            producer.poll(0)
            got += len([m for m in consumer.consume(1000, 0.002) if m.error() is None])
        producer.flush(30)
    finally:
        consumer.close()
        delete_topics(ks, [topic])
    return {"seconds": seconds, "sent": sent, "received": got}
