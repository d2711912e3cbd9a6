"""The numba keyed BLAKE2b kernel equals hashlib (through FeatureHasher) byte for byte."""
from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from producer.blake2 import KeyedBlake2
from shared.hashspec import FeatureHasher

KEY = bytes(range(32))
_KB = KeyedBlake2(KEY)
_FH = FeatureHasher.keyed(KEY, 20)


def _buffers(values: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    data = np.frombuffer(b"".join(values) or b"\0", dtype=np.uint8)
    offsets = np.cumsum([0] + [len(v) for v in values]).astype(np.int64)
    return data, offsets


@pytest.mark.parametrize("field", ["f", "c00", "a" * 126, "b" * 127, "x" * 200, "é字"])
def test_block_boundaries(field):
    values = [b"", b"a", b"x" * 100] + [os.urandom(n) for n in range(120, 135)] + [b"q" * 300, "漢".encode()]
    data, offsets = _buffers(values)
    got = _KB.digests(field.encode(), data, offsets)
    assert got.tolist() == [_FH.digest64(field.encode() + b"\x1f" + v) for v in values]


@given(st.text(max_size=40), st.lists(st.binary(max_size=300), max_size=30))
def test_random_messages(field, values):
    data, offsets = _buffers(values)
    got = _KB.digests(field.encode(), data, offsets)
    assert got.tolist() == [_FH.digest64(field.encode() + b"\x1f" + v) for v in values]


def test_other_key_lengths():
    for n in (16, 33, 64):
        key = os.urandom(n)
        data, offsets = _buffers([b"v1", b"value two"])
        got = KeyedBlake2(key).digests(b"f", data, offsets)
        fh = FeatureHasher.keyed(key, 20)
        assert got.tolist() == [fh.digest64(b"f\x1fv1"), fh.digest64(b"f\x1fvalue two")]
