"""The value tables of the columnar path give the record path's indices, through growth and emptying;
the prefetching CSV source maps rows to lines and its rejects are reported with their own chunk."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from producer.blake2 import KeyedBlake2
from producer.hashing import make_hasher
from producer.rules import WHITESPACE
from producer.schema import load_schema
from producer.sources import CsvSource
from producer.valuetable import ABSENT, ValueTable
from shared.hashspec import FeatureHasher

KEY = bytes(range(32))
BITS = 18
_KB = KeyedBlake2(KEY)
_FH = FeatureHasher.keyed(KEY, BITS)
MISSING = {b"": ABSENT, b"?": 12345, b"not available": 777}  # a long one goes through the arena


def _naive(field: str, values: list[str]) -> list[int]:
    """The documented value string: strip, missing values by their code, else the keyed hash."""
    out = []
    for v in values:
        t = v.strip(WHITESPACE).encode()
        out.append(MISSING[t] if t in MISSING else _FH.digest64(field.encode() + b"\x1f" + t) & ((1 << BITS) - 1))
    return out


def _lookup(table: ValueTable, arr: pa.Array) -> list[int]:
    idx = np.full((len(arr), 3), 7, dtype=np.uint32)  # a strided column, as in the row-major batch
    present = np.ones((len(arr), 3), dtype=bool)
    absent = table.lookup(arr, idx[:, 1], present[:, 1])
    assert absent == int((~present[:, 1]).sum())
    assert (idx[:, [0, 2]] == 7).all() and present[:, [0, 2]].all()  # nothing written outside its column
    return np.where(present[:, 1], idx[:, 1].astype(np.int64), ABSENT).tolist()


_value = st.one_of(st.sampled_from(["", "?", " ? ", "not available", "\tnot available ", "a", "ab c"]),
                   st.text(max_size=12), st.text(min_size=120, max_size=300),
                   st.integers(0, 3000).map(str))


@settings(max_examples=60, deadline=None)
@given(st.lists(_value, max_size=400), st.sampled_from([3, 50, 1 << 20]), st.booleans())
def test_table_equals_naive_through_growth_and_emptying(values, limit, large):
    table = ValueTable(_KB, "f", BITS, limit, MISSING)
    arr = pa.array(values, type=pa.large_string() if large else pa.string())
    half = len(values) // 2
    for part in (arr.slice(0, half), arr.slice(half), arr):  # sliced arrays have a non-zero offset
        assert _lookup(table, part) == _naive("f", part.to_pylist())
    assert table.size <= max(limit, len(set(values))) + len(MISSING) + 1


def test_table_equals_naive_through_slot_growth_and_again_warm():
    """Thousands of values (short, 8/9-byte boundary, long ones alike in all but the last byte) make
    the slots double several times; each value keeps its index when probed again after the moves."""
    rng = np.random.default_rng(3)
    values = [str(v) for v in rng.integers(0, 20000, 30000)]
    values += [f"{'k' * 7}{v % 3}" for v in range(50)] + [f"long value {v:06d}" for v in range(5000)]
    values += ["y" * 299 + chr(48 + v % 10) for v in range(40)]
    values = [values[i] for i in rng.permutation(len(values))]
    table = ValueTable(_KB, "f", BITS, 1 << 20, MISSING)
    arr = pa.array(values)
    for start in range(0, len(values), 7001):
        part = arr.slice(start, 7001)
        assert _lookup(table, part) == _naive("f", part.to_pylist())
    assert table.slots.shape[0] >= 1 << 15  # grew from 4096 slots
    assert _lookup(table, arr) == _naive("f", values)
    assert table.hashed == len({v.strip(WHITESPACE) for v in values} - {"", "?", "not available"})


@pytest.mark.parametrize("n", [0, 1, 3, 7, 8, 9, 16, 40])
def test_values_at_the_end_of_short_and_long_buffers(n):
    """The kernel reads 8 bytes at a time: a value that ends the buffer, and buffers shorter than 8."""
    for values in (["x" * n], ["abc", "x" * n], ["0123456789" * 3, " ", "y" * n, "z" * n]):
        table = ValueTable(_KB, "f", BITS, 1 << 20, MISSING)
        arr = pa.array(values)
        assert _lookup(table, arr) == _naive("f", values)
        assert _lookup(table, arr.slice(len(values) - 1)) == _naive("f", values[-1:])


def test_distinct_counts_values_seen_and_missing_ones_only_once_seen():
    table = ValueTable(_KB, "f", BITS, 1 << 20, MISSING)
    _lookup(table, pa.array(["a", "b", " a", "x" * 40]))
    assert len(table) == 3 and table.hashed == 3
    _lookup(table, pa.array(["?", "b", "?"]))
    assert len(table) == 4 and table.hashed == 3  # "?" is preloaded: counted once seen, never hashed


def test_columnar_path_with_tiny_caches_agrees_with_record_path(tmp_path):
    (tmp_path / "s.toml").write_text('categorical = ["a", "b"]\n[label]\ncolumn = "y"\npositive = ["1"]\n')
    schema = load_schema(tmp_path / "s.toml")
    rng = np.random.default_rng(1)
    rows = [{"a": str(rng.zipf(1.3)), "b": f" v{rng.integers(0, 500)} " if i % 7 else "?", "y": str(i % 2)}
            for i in range(20000)]
    (tmp_path / "in.csv").write_text("a,b,y\n" + "".join(f"{r['a']},{r['b']},{r['y']}\n" for r in rows))
    col = make_hasher(schema, KEY)
    col.cache.limit = 40  # tables emptied many times mid-batch
    batches = [c.batch for c in CsvSource(tmp_path / "in.csv", schema, schema.input_columns, block_bytes=1 << 16)]
    assert len(batches) > 3
    encs = [col.batch(b) for b in batches]
    rec = make_hasher(schema, KEY).records(rows)
    np.testing.assert_array_equal(np.concatenate([e.indices for e in encs]), rec.indices)
    np.testing.assert_array_equal(np.concatenate([e.labels for e in encs]), rec.labels)
    assert set(col._tables) == {"a", "b"}


def _bad_every_1000(tmp_path):
    """6,000 data lines (file lines 2..6001), every 1000th one with a missing column."""
    (tmp_path / "s.toml").write_text('categorical = ["a"]\n[label]\ncolumn = "y"\npositive = ["1"]\n')
    schema = load_schema(tmp_path / "s.toml")
    lines = ["a,y"] + [f"v{i},1" if i % 1000 != 999 else "bad" for i in range(6000)]
    (tmp_path / "in.csv").write_text("\n".join(lines) + "\n")
    return schema, tmp_path / "in.csv"


@pytest.mark.parametrize("stop_after", [1, None])
def test_prefetching_csv_source_maps_rows_to_lines(tmp_path, stop_after):
    schema, path = _bad_every_1000(tmp_path)
    source = CsvSource(path, schema, schema.input_columns, block_bytes=1 << 13)
    chunks, rows = 0, 0
    for chunk in source:
        chunks += 1
        # value v<i> sits on file line i + 2; the rejected lines before it are skipped over
        col = chunk.batch.column(0)
        for pos in (0, chunk.num_rows - 1):
            assert source.line_of(chunk.first_row + pos) == int(col[pos].as_py()[1:]) + 2
        rows += chunk.num_rows
        if stop_after is not None and chunks == stop_after:
            break  # the reader thread must stop and the file close, not hang
    if stop_after is None:
        assert rows == 5994 and chunks > 3
        assert [r[0] for r in source.rejects.rows] == [1001 + 1000 * i for i in range(6)]
