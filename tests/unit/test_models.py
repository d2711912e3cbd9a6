"""Model codec and model directory: round trips, and every kind of corruption is caught."""
from __future__ import annotations

import numpy as np
import pytest

from shared.errors import HashbridgeError
from shared.hashspec import Algorithm, SpecId, key_id
from shared.models import (ModelError, ModelSnapshot, decode_model, encode_model, load_latest_model_dir,
                           save_model_dir)

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
