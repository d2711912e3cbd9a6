"""The hasher's UTF-8 check against Python's own decoder, on edge cases and random bytes."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from producer import utf8

EDGES = [b"", b"plain", "grün".encode(), "€".encode(), "𝄞".encode(), b"\xe9t\xe9", b"\xc0\xaf",
         b"\xc1\xbf", b"\xe0\x80\xaf", b"\xe0\xa0\x80", b"\xed\x9f\xbf", b"\xed\xa0\x80", b"\xef\xbf\xbf",
         b"\xf0\x8f\xbf\xbf", b"\xf0\x90\x80\x80", b"\xf4\x8f\xbf\xbf", b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80",
         b"\xff", b"\x80", b"a\xc3", b"\xe2\x82", b"\xf0\x9d\x84", b"ok\xc3\xa9ok", b"\xc3\xa9\xc3"]


def _python_says(raw: bytes) -> bool:
    try:
        raw.decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        return False
    return True


def _column(values: list[bytes], large: bool = False) -> pa.Array:
    """A string array holding exactly these bytes, valid UTF-8 or not (built from a binary array)."""
    binary = pa.array(values, pa.large_binary() if large else pa.binary())
    return binary.view(pa.large_string() if large else pa.string())


@pytest.mark.parametrize("raw", EDGES)
def test_each_edge_case_agrees_with_python(raw: bytes) -> None:
    assert utf8._valid(np.frombuffer(raw + b"\0", np.uint8), 0, len(raw)) == _python_says(raw)


def test_random_bytes_agree_with_python() -> None:
    rng = np.random.default_rng(7)
    alphabet = np.array([0x41, 0x7F, 0x80, 0x9F, 0xA0, 0xBF, 0xC2, 0xDF, 0xE0, 0xED, 0xEF, 0xF0, 0xF4, 0xF5, 0xFF],
                        np.uint8)
    values = [bytes(rng.choice(alphabet, rng.integers(0, 7))) for _ in range(20_000)]
    want = np.array([not _python_says(v) for v in values])
    assert want.any() and not want.all()
    got = utf8.invalid_rows(_column(values))
    assert got is not None and np.array_equal(got, want)


@pytest.mark.parametrize("large", [False, True])
def test_rows_of_a_sliced_column_are_its_own(large: bool) -> None:
    values = [b"a", b"\xff", "ü".encode(), b"b", b"\xe9", b"c"]
    col = _column(values, large)[2:]  # an offset into the buffers, as a CSV batch slice has
    assert utf8.invalid_rows(col).tolist() == [False, False, True, False]


def test_ascii_and_valid_columns_need_no_rows() -> None:
    assert utf8.invalid_rows(pa.array(["a", "b"] * 1000)) is None
    assert utf8.invalid_rows(pa.array(["grün", "€", "a"])) is None
    assert utf8.invalid_rows(pa.array([1, 2])) is None  # not a string column
    assert utf8.invalid_rows(pa.array([], pa.string())) is None


def test_blanked_rows_decode_and_the_others_are_kept() -> None:
    col = _column([b"x", b"\xff\xfe", "grün".encode()])
    rows = utf8.invalid_rows(col)
    assert utf8.blank_rows(col, rows).to_pylist() == ["x", "", "grün"]
