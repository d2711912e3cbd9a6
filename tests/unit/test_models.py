"""Model codec and model directory: round trips, and every kind of corruption is caught."""
from __future__ import annotations

import numpy as np
import pytest

from shared.errors import HashbridgeError
from shared.hashspec import Algorithm, SpecId, key_id
from shared.modeldir import load_latest_model_dir, save_model_dir
from shared.models import ModelError, ModelSnapshot, decode_model, encode_model

SPEC = SpecId(Algorithm.BLAKE2B_KEYED, 10, False, key_id(b"k" * 16))


def snapshot(version: int = 1, seed: int = 0) -> ModelSnapshot:
    w = np.random.default_rng(seed).normal(size=1 << SPEC.bits).astype(np.float32)
    return ModelSnapshot(version, SPEC, w, -0.25, 1234, 1700000000.5)


def test_round_trip() -> None:
    s = snapshot(7)
    back = decode_model(encode_model(s))
    assert (back.version, back.spec, back.bias, back.records_seen, back.created_at) == \
        (7, SPEC, -0.25, 1234, 1700000000.5)
    np.testing.assert_array_equal(back.weights, s.weights)
    assert back.weights.flags.writeable and back.weights.dtype == np.float32


@pytest.mark.parametrize("pos", [0, 5, 30, 100, -1])
def test_flipped_byte_is_detected(pos: int) -> None:
    blob = bytearray(encode_model(snapshot()))
    blob[pos] ^= 0x40
    with pytest.raises(HashbridgeError):
        decode_model(bytes(blob))


@pytest.mark.parametrize("cut", [0, 10, 200, 1])
def test_truncation_is_detected(cut: int) -> None:
    blob = encode_model(snapshot())
    with pytest.raises(ModelError):
        decode_model(blob[:cut] if cut < 100 else blob[:-cut])


def test_wrong_shape_refused() -> None:
    with pytest.raises(ValueError):
        ModelSnapshot(1, SPEC, np.zeros(5, np.float32), 0.0, 0, 0.0)
    with pytest.raises(ValueError):
        ModelSnapshot(1, SPEC, np.zeros(1 << SPEC.bits, np.float64), 0.0, 0, 0.0)


def test_model_dir_newest_valid_wins(tmp_path) -> None:
    assert load_latest_model_dir(tmp_path / "none") is None
    for v in (1, 2, 3, 4):
        save_model_dir(snapshot(v, seed=v), tmp_path, keep=3)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f"model-{v:012d}.hbm" for v in (2, 3, 4)]
    assert load_latest_model_dir(tmp_path).version == 4
    newest = tmp_path / f"model-{4:012d}.hbm"
    newest.write_bytes(newest.read_bytes()[:-3])  # a torn write is skipped, not served
    assert load_latest_model_dir(tmp_path).version == 3


# -- ModelWatcher with a fake consumer: assembly runs off the polling thread ----------------------
import hashlib  # noqa: E402
import json  # noqa: E402
import threading  # noqa: E402
from dataclasses import dataclass  # noqa: E402

from shared.models import ModelWatcher  # noqa: E402
from shared.settings import KafkaSettings, Topics  # noqa: E402


@dataclass
class Rec:
    _key: bytes
    _value: bytes | None
    _offset: int = 0

    def error(self) -> None: return None
    def key(self) -> bytes: return self._key
    def value(self) -> bytes | None: return self._value
    def offset(self) -> int: return self._offset


class FakeModelsConsumer:
    """Hands out queued records; ``poll`` and ``consume`` never block (no broker)."""

    def __init__(self) -> None:
        self.queue: list[Rec] = []
        self.lock = threading.Lock()

    def publish(self, snap: ModelSnapshot, chunk: int = 4096) -> None:
        blob = encode_model(snap)
        n = -(-len(blob) // chunk)
        recs = [Rec(b"chunk/%d/%d" % (snap.version, i), blob[i * chunk:(i + 1) * chunk]) for i in range(n)]
        manifest = {"version": snap.version, "n_chunks": n, "length": len(blob),
                    "sha256": hashlib.sha256(blob).hexdigest()}
        recs.append(Rec(b"manifest/%d" % snap.version, json.dumps(manifest).encode()))
        with self.lock:
            self.queue.extend(recs)

    def consume(self, n: int, timeout: float) -> list[Rec]:
        with self.lock:
            out, self.queue = self.queue[:n], self.queue[n:]
        return out

    def poll(self, timeout: float) -> Rec | None:
        got = self.consume(1, timeout)
        return got[0] if got else None

    def close(self) -> None: pass


def fake_watcher() -> tuple[ModelWatcher, FakeModelsConsumer]:
    consumer = FakeModelsConsumer()
    return ModelWatcher(KafkaSettings(topics=Topics(prefix="unit.")), consumer=consumer), consumer


def test_poll_does_not_wait_for_a_model_being_assembled() -> None:
    watcher, consumer = fake_watcher()
    started, release = threading.Event(), threading.Event()
    real = watcher._decode

    def slow_decode(blob: bytes) -> ModelSnapshot:
        started.set()
        assert release.wait(30), "never released"
        return real(blob)

    watcher._decode = slow_decode
    try:
        consumer.publish(snapshot(1))
        assert watcher.poll(0) is None  # files the chunks, hands the manifest over, returns
        assert started.wait(30)
        # the assembler is inside decode and cannot go on until released: poll still answers
        for _ in range(3):
            assert watcher.poll(0) is None
        assert watcher.assembling == 1 and watcher.latest is None and not release.is_set()
        release.set()
        got = watcher.poll(30)  # waits for the assembler (a condition), not for a fixed time
        assert got is not None and got.version == 1 and watcher.assembling == 0
        np.testing.assert_array_equal(got.weights, snapshot(1).weights)
        assert not got.weights.flags.writeable  # an immutable snapshot
    finally:
        release.set()
        watcher.close()


def test_swap_hands_out_only_whole_models_in_order() -> None:
    watcher, consumer = fake_watcher()
    expected = {v: snapshot(v, seed=v) for v in range(1, 9)}
    seen: list[int] = []
    try:
        for v, snap in expected.items():
            consumer.publish(snap)
            got = watcher.poll(0)  # the serving loop's call; the assembler may or may not be done
            if got is not None:
                seen.append(got.version)
                np.testing.assert_array_equal(got.weights, expected[got.version].weights)
        while (got := watcher.poll(30)) is not None:
            seen.append(got.version)
            np.testing.assert_array_equal(got.weights, expected[got.version].weights)
            if got.version == 8:
                break
        assert seen == sorted(set(seen)) and seen[-1] == 8  # newer only, never one twice
        assert watcher.rejected == 0
    finally:
        watcher.close()


def test_bad_checksum_is_rejected_by_the_assembler() -> None:
    watcher, consumer = fake_watcher()
    try:
        blob = encode_model(snapshot(2))
        consumer.queue += [Rec(b"chunk/2/0", blob),
                           Rec(b"manifest/2", json.dumps({"version": 2, "n_chunks": 1, "length": len(blob),
                                                          "sha256": "0" * 64}).encode())]
        assert watcher.poll(1.0) is None
        assert watcher.rejected == 1 and watcher.assembling == 0 and watcher.latest is None
    finally:
        watcher.close()
