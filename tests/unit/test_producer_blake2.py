"""The numba keyed BLAKE2b kernel equals hashlib (through FeatureHasher) byte for byte."""
from __future__ import annotations

import hashlib
import os
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from producer.blake2 import KeyedBlake2
from shared.hashspec import PERSON, FeatureHasher

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


def _hashlib(key: bytes, field: bytes, values: list[bytes]) -> list[int]:
    return [struct.unpack("<Q", hashlib.blake2b(field + b"\x1f" + v, key=key, digest_size=8,
                                                 person=PERSON).digest())[0] for v in values]


@pytest.mark.parametrize("field", [b"", b"c19", b"x" * 60])
def test_every_value_length_up_to_300_equals_hashlib(field):
    """Messages of 1 to 361 bytes: one, two and three blocks, each block boundary (128, 256) met
    exactly and by one byte either side (the last block may be full)."""
    rng = np.random.default_rng(len(field))
    values = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in range(301)]
    data, offsets = _buffers(values)
    assert _KB.digests(field, data, offsets).tolist() == _hashlib(KEY, field, values)


@given(st.binary(min_size=1, max_size=64), st.binary(max_size=40),
       st.lists(st.binary(max_size=300), min_size=1, max_size=20))
def test_any_key_field_and_values_equal_hashlib(key, field, values):
    data, offsets = _buffers(values)
    assert KeyedBlake2(key).digests(field, data, offsets).tolist() == _hashlib(key, field, values)


def test_values_read_in_place_from_a_larger_buffer():
    """Offsets into a buffer with bytes before and after each value: only the value's bytes count."""
    data = np.frombuffer(os.urandom(1000), dtype=np.uint8)
    offsets = np.array([3, 3, 10, 140, 141, 400, 999, 1000], dtype=np.int64)
    values = [data[a:b].tobytes() for a, b in zip(offsets[:-1], offsets[1:])]
    assert _KB.digests(b"f", data, offsets).tolist() == _hashlib(KEY, b"f", values)
