"""Deltas without a broker: the codec, the acceptance ledger, the diff of touched coordinates."""
from __future__ import annotations

import numpy as np
import pytest

from trainer.checkpoint import Checkpoint, read_checkpoint, write_checkpoint
from trainer.deltas import Delta, DeltaError, Ledger, decode_delta, diff_delta, encode_delta
from trainer.kernels import STATS_LEN
from trainer.model import Hyper


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


def test_checkpoint_sync_field_roundtrip_and_old_files(tmp_path):
    base = dict(topic="t", offsets={0: 5}, state=np.zeros((16, 2), np.float32), bias=np.zeros(2),
                stats=np.zeros(STATS_LEN), hyper=Hyper(), spec=None)
    old = write_checkpoint(tmp_path, Checkpoint(1, **base))
    assert read_checkpoint(old).sync is None
    sync = {"instance": "a", "deltas_next": 7, "seq": 2, "ledger": Ledger({0: 5}, 9, 2, 1).as_dict()}
    new = write_checkpoint(tmp_path, Checkpoint(2, **base, sync=sync))
    assert read_checkpoint(new).sync == sync
