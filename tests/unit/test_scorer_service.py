"""The scorer loop driven by fake clients: replies first, commits after the flush, swaps between batches."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from scorer.metrics import ScorerMetrics
from scorer.service import ScorerService
from scorer.settings import ScorerSettings
from shared.deadletter import REASON, headers_dict
from shared.errors import KafkaError
from shared.frames import Kind, decode, encode_score
from shared.hashspec import Algorithm, SpecId, key_id
from shared.models import ModelSnapshot

SPEC = SpecId(Algorithm.BLAKE2B_KEYED, 8, False, key_id(b"u" * 16))


def model(version: int) -> ModelSnapshot:
    w = np.random.default_rng(version).normal(size=1 << SPEC.bits).astype(np.float32)
    return ModelSnapshot(version, SPEC, w, 0.0, 0, 0.0)


@dataclass
class Msg:
    _value: bytes
    _offset: int
    _key: bytes = b"k"
    _partition: int = 0

    def error(self) -> None: return None
    def value(self) -> bytes: return self._value
    def key(self) -> bytes: return self._key
    def topic(self) -> str: return "hb.score"
    def partition(self) -> int: return self._partition
    def offset(self) -> int: return self._offset
    def timestamp(self) -> tuple[int, int]: return (0, 0)


@dataclass
class FakeConsumer:
    batches: list[list[Msg]]
    log: list[Any]
    def subscribe(self, topics: list[str], **_: Any) -> None: pass
    def consume(self, n: int, timeout: float) -> list[Msg]:
        return self.batches.pop(0) if self.batches else []
    def poll(self, timeout: float) -> None: return None
    def commit(self, offsets: list[Any], asynchronous: bool) -> None:
        self.log.append(("commit", [(tp.partition, tp.offset) for tp in offsets]))
    def assignment(self) -> list[Any]: return []
    def close(self) -> None: pass


@dataclass
class FakeProducer:
    """Acknowledges what was produced at the next ``poll`` (or ``flush``), unless ``hold`` is set."""
    log: list[Any]
    hold: bool = False
    queued: list[Any] = field(default_factory=list)
    def produce(self, topic: str, key: bytes | None = None, value: bytes | None = None,
                headers: Any = None, on_delivery: Any = None) -> None:
        self.log.append(("produce", topic, key, value, headers))
        self.queued.append(on_delivery)
    def _ack(self) -> int:
        n = len(self.queued)
        for cb in self.queued:
            if cb is not None:
                cb(None, None)
        self.queued = []
        return n
    def poll(self, t: float) -> int:
        return 0 if self.hold else self._ack()
    def __len__(self) -> int: return len(self.queued)
    def flush(self, t: float = 0) -> int:
        self.log.append(("flush", self._ack()))
        return 0


@dataclass
class FakeWatcher:
    models: list[ModelSnapshot | None]
    def poll(self, timeout: float) -> ModelSnapshot | None:
        return self.models.pop(0) if self.models else None
    def close(self) -> None: pass


def request(ids: list[int], spec: SpecId = SPEC) -> bytes:
    n = len(ids)
    return encode_score(spec, np.array(ids, np.uint64), np.arange(n + 1, dtype=np.uint32),
                        np.arange(n, dtype=np.uint32))


def service(batches: list[list[Msg]], models: list[Any], log: list[Any]) -> ScorerService:
    s = ScorerSettings(model_wait=0.0, commit_interval=0.0, model_check_interval=0.0, lag_interval=1e9)
    return ScorerService(s, ScorerMetrics(), consumer=FakeConsumer(batches, log),
                         producer=FakeProducer(log), watcher=FakeWatcher(models))


def test_replies_then_commit_after_acks_and_swap_between_batches() -> None:
    log: list[Any] = []
    batches = [[Msg(request([1, 2]), 0), Msg(request([3]), 1)], [Msg(request([4]), 2)]]
    svc = service(batches, [model(1), model(2)], log)
    with svc:
        assert svc.run(max_records=4, timeout=5) == 4
    replies = [decode(e[3]) for e in log if e[0] == "produce"]
    assert [f.kind for f in replies] == [Kind.PREDICTION] * 3
    assert [f.model_version for f in replies] == [1, 1, 2]
    commits = [e for e in log if e[0] == "commit"]
    assert commits[0] == ("commit", [(0, 2)])  # the first batch, once both its replies were acked
    assert commits[-1] == ("commit", [(0, 3)])
    assert svc.metrics.model_version._value.get() == 2


def test_interval_commit_waits_for_acks_without_flushing() -> None:
    """Replies not yet acknowledged keep their offsets uncommitted; the interval never flushes."""
    log: list[Any] = []
    svc = service([], [model(1)], log)
    with svc:
        svc._check_model(0)
        svc._producer.hold = True
        svc._serve_batch([Msg(request([1]), 0)])
        svc._commit(wait=False)
        assert not [e for e in log if e[0] in ("commit", "flush")]
        svc._producer.hold = False
        svc._commit(wait=False)  # its poll runs the delivery callback
        assert [e for e in log if e[0] == "commit"] == [("commit", [(0, 1)])]
        svc._producer.hold = True
        svc._serve_batch([Msg(request([2]), 1)])
        svc._commit()  # a clean stop or a revoke: flush, then commit
        assert not [e for e in log if e[0] == "flush"][:-1] and log[-1] == ("commit", [(0, 2)])
        assert log[-2][0] == "flush"


def test_later_batch_acked_first_waits_for_the_earlier_one() -> None:
    log: list[Any] = []
    svc = service([], [model(1)], log)
    with svc:
        svc._check_model(0)
        svc._producer.hold = True
        svc._serve_batch([Msg(request([1]), 0)])
        first = svc._producer.queued
        svc._producer.queued = []
        svc._serve_batch([Msg(request([2]), 1)])
        svc._producer.poll = lambda t: 0  # type: ignore[method-assign]
        svc._producer._ack()  # only the second batch's reply is acknowledged
        svc._commit(wait=False)
        assert not [e for e in log if e[0] == "commit"]
        first[0](None, None)
        svc._commit(wait=False)
        assert [e for e in log if e[0] == "commit"] == [("commit", [(0, 2)])]


def test_a_delivery_error_leaves_offsets_uncommitted() -> None:
    log: list[Any] = []
    svc = service([], [model(1)], log)
    with svc:
        svc._check_model(0)
        svc._producer.hold = True
        svc._serve_batch([Msg(request([1]), 0)])
        svc._producer.queued[0]("broker said no", None)
        svc._producer.queued = []
        with pytest.raises(KafkaError):
            svc._commit(wait=False)
        svc._producer.flush = lambda t=0: 0  # type: ignore[method-assign]
        svc._stack = None  # the failed loop does not commit on close
    assert not [e for e in log if e[0] == "commit"]


def test_foreign_and_garbage_get_error_reply_and_dead_letter() -> None:
    foreign = SpecId(Algorithm.BLAKE2B_KEYED, 8, False, key_id(b"z" * 16))
    log: list[Any] = []
    svc = service([[Msg(request([7], foreign), 0), Msg(b"junk", 1), Msg(request([8]), 2)]], [model(1)], log)
    with svc:
        svc.run(max_records=2, timeout=5)
    produced = [e for e in log if e[0] == "produce"]
    replies = [decode(e[3]) for e in produced if e[1] == "hb.predictions"]
    dlq = [headers_dict(e[4])[REASON] for e in produced if e[1] == "hb.dlq"]
    assert [(f.kind, f.reason) for f in replies[:2]] == [(Kind.ERROR, "spec_mismatch"), (Kind.ERROR, "truncated")]
    assert replies[0].request_ids.tolist() == [7] and replies[1].n_records == 0
    assert replies[2].kind is Kind.PREDICTION
    assert dlq == ["spec_mismatch", "truncated"]
    assert svc.metrics.rejected.labels("spec_mismatch")._value.get() == 1


def test_no_model_after_grace_gets_error_reply() -> None:
    log: list[Any] = []
    svc = service([[Msg(request([1]), 0)]], [], log)
    with svc:
        svc.run(max_records=1, timeout=5)
    reply = decode(next(e[3] for e in log if e[0] == "produce"))
    assert reply.kind is Kind.ERROR and reply.reason == "no_model"


def test_a_batch_never_waits_to_fill() -> None:
    """consume() is only called without a wait; the one wait is poll(), which returns at the first message."""
    calls: list[tuple[str, float]] = []

    class Recording(FakeConsumer):
        def consume(self, n: int, timeout: float) -> list[Msg]:
            calls.append(("consume", timeout))
            return super().consume(n, timeout)

        def poll(self, timeout: float) -> Msg | None:
            calls.append(("poll", timeout))
            return None

    log: list[Any] = []
    s = ScorerSettings(model_wait=0.0, commit_interval=0.0, model_check_interval=0.0, lag_interval=1e9)
    svc = ScorerService(s, ScorerMetrics(), consumer=Recording([[Msg(request([1]), 0)]], log),
                        producer=FakeProducer(log), watcher=FakeWatcher([model(1)]))
    with svc:
        assert svc.run(max_records=1, timeout=5) == 1
        svc.run(timeout=0.05)  # nothing left: waits in poll() only
    assert calls and all(t == 0 for kind, t in calls if kind == "consume")
    assert ("poll", s.consume_wait) in calls


def test_serve_threads_come_from_the_mode_unless_set() -> None:
    assert ScorerSettings(mode="latency").serve_threads == 1
    assert ScorerSettings(mode="throughput").serve_threads == 2
    assert ScorerSettings.from_env({"HASHBRIDGE_SCORER_SERVE_THREADS": "3"}, mode="throughput").serve_threads == 3
    assert ScorerSettings.from_env({"HASHBRIDGE_SCORER_SERVE_THREADS": "3"}, serve_threads=1).serve_threads == 1
    with pytest.raises(ValueError, match="serve_threads"):
        ScorerSettings(serve_threads=-1)
