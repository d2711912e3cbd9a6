"""Model store on a real broker: newest complete model only, never a half-published one."""
from __future__ import annotations

import json
import time
import uuid

import numpy as np
import pytest

from shared.clients import make_producer
from shared.hashspec import Algorithm, SpecId, key_id
from shared.models import ModelPublisher, ModelSnapshot, ModelWatcher, encode_model
from shared.settings import KafkaSettings, Topics

SPEC = SpecId(Algorithm.BLAKE2B_KEYED, 18, False, key_id(b"m" * 16))  # 1 MiB of weights


def snapshot(version: int) -> ModelSnapshot:
    w = np.random.default_rng(version).normal(size=1 << SPEC.bits).astype(np.float32)
    return ModelSnapshot(version, SPEC, w, 0.1 * version, 1000 * version, time.time())


@pytest.fixture
def settings(kafka_bootstrap: str) -> KafkaSettings:
    return KafkaSettings(bootstrap=kafka_bootstrap, topics=Topics(prefix=f"t{uuid.uuid4().hex[:12]}."))


def wait_model(watcher: ModelWatcher, version: int, deadline_s: float = 30.0) -> ModelSnapshot:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        got = watcher.poll(1.0)
        if got is not None and got.version >= version:
            return got
    raise AssertionError(f"model version {version} not seen within {deadline_s}s")


def test_keep_two_of_three_and_newest_wins(settings: KafkaSettings) -> None:
    pub = ModelPublisher(settings, keep=2, chunk_bytes=256 * 1024)
    try:
        for v in (1, 2, 3):
            pub.publish(snapshot(v))
        with pytest.raises(ValueError):
            pub.publish(snapshot(3))
    finally:
        pub.close()
    watcher = ModelWatcher(settings)
    try:
        got = wait_model(watcher, 3)
        assert got.version == 3 and got.bias == pytest.approx(0.3)
        np.testing.assert_array_equal(got.weights, snapshot(3).weights)
        assert watcher.poll(1.0) is None  # nothing newer
    finally:
        watcher.close()
    # a restarted publisher learns the last version and the live ones from the topic
    pub2 = ModelPublisher(settings, keep=2)
    try:
        assert pub2.last_version == 3 and sorted(pub2._live) == [2, 3]
        with pytest.raises(ValueError):
            pub2.publish(snapshot(2))
    finally:
        pub2.close()


def test_half_published_model_is_never_returned(settings: KafkaSettings) -> None:
    pub = ModelPublisher(settings, keep=3)
    pub.publish(snapshot(1))
    pub.close()
    watcher = ModelWatcher(settings)
    try:
        assert wait_model(watcher, 1).version == 1
        # version 2: chunks only, no manifest (a publisher that died mid-way)
        blob = encode_model(snapshot(2))
        producer = make_producer(settings)
        for i in range(0, len(blob), 300_000):
            producer.produce(settings.topics.models, key=b"chunk/2/%d" % (i // 300_000),
                             value=blob[i:i + 300_000])
        # version 3: a manifest whose checksum does not match its chunks
        bad = encode_model(snapshot(3))
        producer.produce(settings.topics.models, key=b"chunk/3/0", value=bad)
        manifest = {"version": 3, "n_chunks": 1, "length": len(bad), "sha256": "0" * 64}
        producer.produce(settings.topics.models, key=b"manifest/3", value=json.dumps(manifest).encode())
        producer.flush(30)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and watcher.rejected == 0:
            assert watcher.poll(0.5) is None
        assert watcher.rejected == 1 and watcher.latest.version == 1
    finally:
        watcher.close()
