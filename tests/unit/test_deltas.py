"""Deltas without a broker: the codec, the acceptance ledger, the diff of touched coordinates,
absorbing peers' deltas into shared memory and the workers' staleness bound."""
from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from shared.hashspec import Algorithm, SpecId, mmh3_key_id
from shared.settings import KafkaSettings, Topics
from tests.unit.test_trainer_state import FakeConsumer, FakeMsg, FakeProducer, frame
from trainer import shm as S
from trainer.base import base_checkpoint, decode_state, encode_state, publish_model
from trainer.checkpoint import Checkpoint, read_checkpoint, write_checkpoint
from trainer.deltacodec import HOLD, quantise
from trainer.deltacodec import add_rows
from trainer.deltas import (Delta, DeltaError, DeltaSync, Ledger, accept, decode_delta, diff_delta,
                            encode_delta)
from trainer.kernels import STATS_LEN
from trainer.metrics import TrainerMetrics
from trainer.model import Hyper
from trainer.service import G_ASKED, G_DONE, G_LIMIT, Worker, gate_len
from trainer.settings import TrainerSettings


SPEC = SpecId(Algorithm.MMH3_PUBLIC, 8, False, mmh3_key_id(0))


def make_delta(claims=None, n=50, size=1 << 12, seed=0) -> Delta:
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(size, n, replace=False)).astype(np.uint32)
    return Delta("host-1", 3, 1234, {0: (-1, 10), 2: (5, 9)} if claims is None else claims, idx,
                 rng.normal(size=(n, 2)).astype(np.float32), np.array([0.5, 2.0]),
                 rng.normal(size=8).astype(np.float32), 1700000000.5)


def test_roundtrip_and_compression():
    d = make_delta()
    out = decode_delta(encode_delta(d), 1 << 12)
    assert (out.instance, out.seq, out.records, out.claims, out.created_at) == \
        ("host-1", 3, 1234, {0: (-1, 10), 2: (5, 9)}, 1700000000.5)
    np.testing.assert_array_equal(out.index, d.index)
    np.testing.assert_array_equal(out.values, d.values)
    np.testing.assert_array_equal(out.bias, d.bias)
    np.testing.assert_array_equal(out.sample, d.sample)
    dense = Delta("a", 1, 1, {}, np.arange(4000, dtype=np.uint32), np.zeros((4000, 2), np.float32))
    assert len(encode_delta(dense)) < 4000 * 12 / 10  # delta-coded indices and zeros compress


def test_empty_delta_roundtrip():
    d = Delta("a", 1, 0, {}, np.zeros(0, np.uint32), np.zeros((0, 2), np.float32))
    out = decode_delta(encode_delta(d))
    assert out.index.size == 0 and out.claims == {}


@pytest.mark.parametrize("mutate", ["magic", "truncate", "range"])
def test_decode_rejects_bad_input(mutate):
    blob = encode_delta(make_delta())
    if mutate == "magic":
        blob = b"XXXX" + blob[4:]
    elif mutate == "truncate":
        blob = blob[:-7]
    with pytest.raises(DeltaError):
        decode_delta(blob, 16 if mutate == "range" else 1 << 12)


def test_ledger_accepts_contiguous_claims_once():
    led = Ledger()
    assert led.decide(make_delta({0: (-1, 10)}))
    assert not led.decide(make_delta({0: (-1, 12)}))  # a second "from the beginning": rejected
    assert led.decide(make_delta({0: (10, 20), 1: (-1, 4)}))
    assert not led.decide(make_delta({0: (15, 30)}))  # overlaps [10, 20)
    assert not led.decide(make_delta({1: (4, 9), 0: (10, 25)}))  # one bad claim rejects it all
    assert led.decide(make_delta({}))  # heartbeat
    assert led.ends == {0: 20, 1: 4}
    assert (led.accepted, led.rejected, led.records) == (3, 3, 3 * 1234)
    assert Ledger.from_dict(led.as_dict()) == led


def test_diff_delta_touched_coordinates_only():
    copy = np.zeros((64, 2), np.float32)
    state = copy.copy()
    state[3, 0], state[7, 1], state[9] = 0.25, 1.0, (-1.0, 2.0)
    idx, vals = diff_delta(state, copy)
    assert idx.tolist() == [3, 7, 9]
    copy[idx] += vals
    np.testing.assert_array_equal(copy, state)


def test_diff_delta_matches_the_numpy_reference():
    """The numba pass against the plain numpy form it replaced, on random changes and the edge
    values: -0.0 against 0.0 (no change), subnormals, NaN and an infinite change."""
    rng = np.random.default_rng(5)
    copy = rng.normal(size=(4096, 2)).astype(np.float32)
    state = copy.copy()
    rows = rng.choice(4096, 300, replace=False)
    state[rows, rng.integers(0, 2, 300)] += rng.normal(size=300).astype(np.float32)
    copy[10], state[10] = (0.0, 1.0), (-0.0, 1.0)
    state[11, 0] = copy[11, 0] + np.float32(1e-45)
    state[12, 1], state[13, 0] = np.nan, np.inf
    d = state - copy
    want = np.flatnonzero((d != 0).any(axis=1))
    idx, vals = diff_delta(state, copy)
    assert idx.dtype == np.uint32 and idx.tolist() == want.tolist()
    np.testing.assert_array_equal(vals, d[want])


def test_add_rows_matches_numpy_fancy_add():
    rng = np.random.default_rng(6)
    state = rng.normal(size=(2048, 2)).astype(np.float32)
    idx = np.sort(rng.choice(2048, 500, replace=False)).astype(np.uint32)
    vals = rng.normal(size=(500, 2)).astype(np.float32)
    want = state.copy()
    want[idx] += vals
    add_rows(state, idx, vals)
    np.testing.assert_array_equal(state, want)


def test_checkpoint_sync_field_roundtrip_and_old_files(tmp_path):
    base = dict(topic="t", offsets={0: 5}, state=np.zeros((16, 2), np.float32), bias=np.zeros(2),
                stats=np.zeros(STATS_LEN), hyper=Hyper(), spec=None)
    old = write_checkpoint(tmp_path, Checkpoint(1, **base))
    assert read_checkpoint(old).sync is None
    sync = {"instance": "a", "deltas_next": 7, "seq": 2, "ledger": Ledger({0: 5}, 9, 2, 1).as_dict()}
    new = write_checkpoint(tmp_path, Checkpoint(2, **base, sync=sync))
    assert read_checkpoint(new).sync == sync


# -- float16 deltas with error feedback (trainer/deltacodec.py) ------------------------------------

def test_quantised_delta_roundtrip_is_bit_exact_and_smaller():
    rng = np.random.default_rng(3)
    idx = np.arange(0, 40_000, 2, dtype=np.uint32)
    vals = np.stack([rng.normal(0, 0.01, idx.size), rng.exponential(0.05, idx.size)], 1).astype(np.float32)
    qi, qv, scale = quantise(idx, vals)
    d = Delta("a", 1, 10, {0: (-1, 3)}, qi, qv, np.array([0.1, 0.2]), scale=scale)
    out = decode_delta(encode_delta(d), 1 << 16)
    assert out.scale == scale
    np.testing.assert_array_equal(out.index, qi)
    np.testing.assert_array_equal(out.values, qv)  # the wire adds no error: quantise did it all
    exact = Delta("a", 1, 10, {0: (-1, 3)}, idx, vals, np.array([0.1, 0.2]))
    assert len(encode_delta(d)) < 0.6 * len(encode_delta(exact))
    # every coordinate's error is within f16 rounding of its change or the hold threshold
    full = np.zeros((idx.size, 2), np.float32)
    full[np.searchsorted(idx, qi)] = qv
    top = np.abs(vals).max(0)
    assert np.all(np.abs(full - vals) <= np.maximum(np.abs(vals) * 2.0 ** -11, top * HOLD) + 1e-12)


def test_quantise_never_overflows_and_keeps_large_changes_relative():
    idx = np.arange(4, dtype=np.uint32)
    vals = np.array([[1e-9, 3e6], [-2e-9, 1.0], [0, 5e5], [4e-9, 0]], np.float32)
    qi, qv, scale = quantise(idx, vals)
    assert np.isfinite(qv).all() and scale[1] > 0 > scale[0]
    np.testing.assert_allclose(qv, vals[qi], rtol=2.0 ** -11)


def test_error_feedback_loses_nothing_over_many_deltas():
    """The publisher's loop: delta = quantise(state - copy); readers add it to copy; what it left
    out is still in state - copy next time; a final exact delta leaves copy == state."""
    rng = np.random.default_rng(5)
    size = 1 << 12
    state, copy = np.zeros((size, 2), np.float32), np.zeros((size, 2), np.float32)
    for _ in range(30):
        touched = rng.choice(size, 500, replace=False)
        state[touched, 0] += rng.normal(0, 0.01, 500).astype(np.float32)
        state[touched, 1] += rng.exponential(0.01, 500).astype(np.float32)
        qi, qv, _ = quantise(*diff_delta(state, copy))
        copy[qi] += qv
        # carried, never dropped: bounded by the rounding and hold rule of one delta
        assert np.abs(state - copy).max() <= 2.0 ** -11 * np.abs(state).max() + 1e-7
    idx, vals = diff_delta(state, copy)  # the final, exact delta
    copy[idx] += vals
    np.testing.assert_array_equal(copy, state)


# -- a new instance starts from the published cut (trainer/base.py) ---------------------------------

def _learned(rng: np.random.Generator, size: int) -> np.ndarray:
    d = np.zeros((size, 2), np.float32)
    t = rng.choice(size, 40, replace=False)
    d[t] = rng.normal(size=(40, 2)).astype(np.float32)
    return d


def test_new_instance_from_the_published_cut_applies_every_delta_exactly_once():
    """Log: A#1 [0,10), B#1 [0,8) of p1, a rejected B#2 (overlaps A), then the model publisher A
    publishes its cut at position P=3 while holding unpublished learning and with A#2 in flight
    (it lands at offset 3), then B#3. A new instance restores the cut and reads from P; it must
    equal an instance that replayed from 0, and a start from A's shared memory would not."""
    rng = np.random.default_rng(11)
    size = 256

    def delta(inst, seq, claims, vals):
        idx, v = diff_delta(vals, np.zeros_like(vals))
        return Delta(inst, seq, 5, claims, idx, v, np.array([0.25, 1.0]))

    log_ = [delta("A", 1, {0: (-1, 10)}, _learned(rng, size)),
            delta("B", 1, {1: (-1, 8)}, _learned(rng, size)),
            delta("B", 2, {0: (5, 12)}, _learned(rng, size)),  # rejected by every reader
            delta("A", 2, {0: (10, 20)}, _learned(rng, size)),  # A's delta in flight at publish
            delta("B", 3, {1: (8, 15)}, _learned(rng, size))]
    P = 3
    ref_state, ref_bias, ref_led = np.zeros((size, 2), np.float32), np.zeros(2), Ledger()
    verdicts = [accept(d, ref_led, ref_state, ref_bias) for d in log_]
    assert verdicts == [True, True, False, True, True]

    # the publisher A at position P: its cut, and its shared memory = cut + own unpublished learning
    cut, cut_bias, cut_led = np.zeros((size, 2), np.float32), np.zeros(2), Ledger()
    for d in log_[:P]:
        accept(d, cut_led, cut, cut_bias)
    shm = cut + _learned(rng, size)  # A's unpublished learning: not in the model
    ckpt = Checkpoint(4, "t", dict(cut_led.ends), cut, cut_bias, np.zeros(STATS_LEN), Hyper(), SPEC,
                      1.0, {"instance": "A", "deltas_next": P, "seq": 1, "ledger": cut_led.as_dict()})
    pub = FakePublisher()
    publish_model(pub, ckpt)
    snapshot, blob, sync = pub.published[0]
    assert sync["deltas_next"] == P and snapshot.records_seen == cut_led.records
    manifest = {"version": 4, "algorithm": int(SPEC.algorithm), "bits": SPEC.bits, "signed": SPEC.signed,
                "key_id": SPEC.key_id_hex, "spec_version": SPEC.version, "created_at": 1.0, "sync": sync}

    base = base_checkpoint(manifest, blob, "t")
    assert base.sync["origin"] == {"model_version": 4, "deltas_next": P} and base.offsets == {0: 10, 1: 8}
    new_state, new_bias, new_led = base.state.copy(), base.bias.copy(), Ledger.from_dict(base.sync["ledger"])
    for d in log_[base.sync["deltas_next"]:]:
        accept(d, new_led, new_state, new_bias)
    np.testing.assert_array_equal(new_state, ref_state)
    np.testing.assert_array_equal(new_bias, ref_bias)
    assert new_led == ref_led and new_led.ends == {0: 20, 1: 15} and new_led.records == 4 * 5
    # the wrong readings: a base holding A's shared memory keeps its unpublished learning, which
    # A#2 (in flight) carries again; the cut replayed from offset 0 (fresh ledger) counts A#1, B#1 twice
    for start, led, frm in ((shm, Ledger.from_dict(cut_led.as_dict()), P), (cut, Ledger(), 0)):
        st, bi = start.copy(), cut_bias.copy()
        for d in log_[frm:]:
            accept(d, led, st, bi)
        assert not np.allclose(st, ref_state)


class FakePublisher:
    def __init__(self) -> None:
        self.published: list = []

    def publish(self, snapshot, state=None, sync=None) -> None:
        self.published.append((snapshot, state, sync))


def test_state_blob_roundtrip_and_validation():
    state = np.random.default_rng(0).normal(size=(16, 2)).astype(np.float32)
    bias = np.array([0.5, 3.0])
    s, b = decode_state(encode_state(state, bias), 4)
    np.testing.assert_array_equal(s, state)
    np.testing.assert_array_equal(b, bias)
    with pytest.raises(ValueError):
        decode_state(encode_state(state, bias), 5)


def sync_on(a, instance: str = "me"):
    """A DeltaSync over shared arrays; its Kafka clients are created but never used here."""
    settings = TrainerSettings(kafka=KafkaSettings(bootstrap="127.0.0.1:1", topics=Topics("t.")),
                               bits=a.handle.bits, workers=1, sync_deltas=True)
    return DeltaSync(settings, a, TrainerMetrics(CollectorRegistry()), instance)


def test_absorb_moves_remote_ends_so_our_next_claims_are_ours_only():
    """A peer's accepted delta goes into shared memory at once (not at our next sync) with its
    partitions' ends; our next delta then claims only what our workers learned, from our base."""
    with S.SharedState(bits=8, workers=1, partitions=4) as a:
        sync = sync_on(a)
        try:
            a.offsets[0] = 5  # our worker learned partition 0 from its start: 5 messages
            a.counters[0, S.W_FRAMES] = 5
            a.state[1] = 1.0
            peer = Delta("peer", 1, 70, {2: (-1, 7)}, np.array([3], np.uint32),
                         np.array([[0.25, 0.5]], np.float32), np.array([0.1, 0.0]),
                         np.zeros(0, np.float32), 0.0)
            assert sync._decide(peer) and sync.queue == [peer]
            assert sync.absorb() and not sync.queue
            assert a.offsets[2] == 7 and sync.base[2] == 7 and a.state[3, 0] == 0.25
            assert sync.step()
            mine = sync.pending[0]
            assert mine.claims == {0: (-1, 5)}  # not the peer's partition 2
            assert list(mine.index) == [1]  # the peer's coordinate is in copy, not in our delta
            assert decode_delta(sync.pending[2]).claims == mine.claims  # encoded while paused
            # a peer claiming a partition we learned since our last sync: a conflict
            a.offsets[0], a.counters[0, S.W_FRAMES] = 8, 8
            assert sync._decide(Delta("peer", 2, 10, {0: (5, 8)}, np.zeros(0, np.uint32),
                                      np.zeros((0, 2), np.float32), np.zeros(2),
                                      np.zeros(0, np.float32), 0.0))
            assert not sync.absorb()
        finally:
            sync.close()


def test_worker_stops_at_the_record_bound_between_frames():
    """Bounded staleness: past the supervisor's record bound a worker learns no further frame
    (it waits, acknowledging pauses, until our deltas are accepted); offsets stay with the model."""
    spec = SpecId(Algorithm.MMH3_PUBLIC, 10, False, b"\x01" * 8)
    rng = np.random.default_rng(3)
    settings = TrainerSettings(kafka=KafkaSettings(topics=Topics("t.")), bits=10, workers=1,
                               spec=spec, sync_deltas=True)
    gate = mp.get_context("spawn").Array("q", gate_len(1), lock=False)
    gate[G_LIMIT] = 10
    with S.SharedState(bits=10, workers=1, partitions=4) as a:
        w = Worker(settings, a, 0, FakeConsumer([]), FakeProducer(), gate=gate)
        a.control[S.C_STOP] = 1  # the bound holds the worker until then: the wait must end
        msgs = [FakeMsg(frame(spec, 10, rng), 1, o) for o in range(3)]
        assert w.process(msgs) == 10
        assert a.records() == 10 and list(a.offsets) == [-1, 1, -1, -1]
        del w


def test_claim_handover_counts_per_worker_without_a_lock():
    """A worker's rebalance callback asks in its own gate word and waits until the supervisor
    marks its own done word; another worker's words are left alone (one writer per word)."""
    import threading

    spec = SpecId(Algorithm.MMH3_PUBLIC, 10, False, b"\x01" * 8)
    settings = TrainerSettings(kafka=KafkaSettings(topics=Topics("t.")), bits=10, workers=2,
                               spec=spec, sync_deltas=True)
    gate = mp.get_context("spawn").Array("q", gate_len(2), lock=False)
    with S.SharedState(bits=10, workers=2, partitions=4) as a:
        w = Worker(settings, a, 1, FakeConsumer([]), FakeProducer(), gate=gate)

        def supervisor() -> None:  # the supervisor's half: settle, then mark every asked handover done
            while gate[G_ASKED + 2] == gate[G_DONE + 2]:
                pass
            gate[G_DONE + 2] = gate[G_ASKED + 2]

        for round_ in (1, 2):
            t = threading.Thread(target=supervisor)
            t.start()
            w._hand_over()
            t.join(5)
            assert not t.is_alive()
            assert list(gate) == [0, 0, 0, round_, round_]
        del w
