"""Uniform CSV blocks are hashed where they lie (``RawBatch``): every field, index, label and bad
row is the same as through Arrow columns, and anything the raw path does not take goes through Arrow."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from producer import csvplain
from producer.csvplain import RawBatch
from producer.hashing import make_hasher
from producer.schema import parse_schema
from producer.sources import CsvSource
from shared.errors import RecordError

KEY = bytes(range(32))
VALUES = ["a", "bb", "", " pad ", "?", "a-value-longer-than-8", "x" * 40, "7", "\tt", "NA"]


def _schema(fields: int, **extra):
    return parse_schema({"header": True, "categorical": [f"f{j}" for j in range(1, fields)],
                         "label": {"column": "label", "positive": ["1"], "negative": ["0"]},
                         "missing": {"values": ["?", "NA"]}, **extra})


def _csv(path: Path, rows: int, fields: int = 5, seed: int = 0, extra: str = "", labels="01") -> Path:
    rng = np.random.default_rng(seed)
    lines = [",".join(["label"] + [f"f{j}" for j in range(1, fields)])]
    for _ in range(rows):
        lines.append(",".join([rng.choice(list(labels))] + [VALUES[k] for k in rng.integers(0, len(VALUES), fields - 1)]))
    path.write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")
    return path


def _batches(path: Path, schema, block: int = 1 << 12, raw: bool = True) -> list:
    return [c.batch for c in CsvSource(path, schema, schema.input_columns, block_bytes=block, raw_batches=raw)]


def test_uniform_blocks_come_raw_and_read_as_pyarrow_reads_them(tmp_path: Path) -> None:
    schema = _schema(5)
    path = _csv(tmp_path / "a.csv", 3000)
    raw = _batches(path, schema)
    assert raw and all(isinstance(b, RawBatch) for b in raw)
    mine = pa.Table.from_batches([b.to_arrow() for b in raw])
    ref = pa.Table.from_batches(_batches(path, schema, raw=False))
    assert mine.equals(ref) and mine.num_rows == 3000
    for b in raw[:3]:  # one column alone, as the label is read
        arrow = b.to_arrow()
        for name in b.columns:
            assert b.column(name).equals(arrow.column(name))


@pytest.mark.parametrize("text", ["label,f1\r\n1,a\r\n0,b\r\n", 'label,f1\n1,"a"\n0,b\n', "label,f1\n1,a\n\n0,b\n"])
def test_crlf_quotes_and_empty_lines_are_not_uniform(tmp_path: Path, text: str) -> None:
    path = tmp_path / "b.csv"
    path.write_text(text)
    batches = _batches(path, _schema(2))
    assert batches and not any(isinstance(b, RawBatch) for b in batches)
    assert sum(b.num_rows for b in batches) == 2


def test_a_line_longer_than_a_block(tmp_path: Path) -> None:
    schema = _schema(3)
    path = tmp_path / "c.csv"
    path.write_text("label,f1,f2\n1,a,b\n0," + "y" * 5000 + ",c\n1,d,e\n")
    raw = _batches(path, schema, block=1 << 10)
    table = pa.Table.from_batches([b.to_arrow() for b in raw])
    assert table.column("f1").to_pylist() == ["a", "y" * 5000, "d"]


def _encoded(hasher, batch):
    enc = hasher.batch(batch)
    return enc.offsets, enc.indices, enc.labels, enc.kept, enc.bad


def _assert_same(raw_batches: list, schema) -> None:
    """A fresh hasher over the raw batches and one over their Arrow copies agree on everything."""
    a, b = make_hasher(schema, KEY), make_hasher(schema, KEY)
    for batch in raw_batches:
        got, want = _encoded(a, batch), _encoded(b, batch.to_arrow())
        for x, y in zip(got, want):
            assert (x == y) if isinstance(x, list) else np.array_equal(x, y)
    assert {k: len(t) for k, t in a._tables.items()} == {k: len(t) for k, t in b._tables.items()}


def test_the_hasher_on_raw_blocks_equals_it_on_arrow_columns(tmp_path: Path) -> None:
    schema = _schema(6)
    raw = _batches(_csv(tmp_path / "d.csv", 5000, fields=6, labels="01x"), schema)  # "x": bad labels
    hasher = make_hasher(schema, KEY)
    assert isinstance(raw[0], RawBatch) and hasher._raw_ok(raw[0])
    _assert_same(raw, schema)
    enc = make_hasher(schema, KEY).batch(raw[0])
    assert enc.bad and all(why == "bad_label" for _, _, why in enc.bad)


def test_blocks_the_raw_path_does_not_take_go_through_arrow(tmp_path: Path, monkeypatch) -> None:
    schema = _schema(4)
    text = "\n".join(["label,f1,f2,f3", "1,caf\u00e9,a,b", "0,\u00ff\u00fe,b,c"]) + "\n"
    path = tmp_path / "e.csv"
    path.write_bytes(text.encode("utf-8") + b"1,\xff\xfe,a,b\n")  # one value not UTF-8
    raw = _batches(path, schema)
    assert isinstance(raw[0], RawBatch) and not raw[0].ascii()
    made: list[int] = []
    real = RawBatch.to_arrow
    monkeypatch.setattr(RawBatch, "to_arrow", lambda self: made.append(1) or real(self))
    enc = make_hasher(schema, KEY).batch(raw[0])
    assert made and enc.bad == [(2, "f1", "invalid_utf8")]  # rejected exactly as through Arrow
    monkeypatch.undo()
    _assert_same(raw, schema)
    numeric = parse_schema({"header": True, "categorical": ["f1", "f2"], "numeric": {"f3": {"edges": [1, 2]}},
                            "label": {"column": "label", "positive": ["1"], "negative": ["0"]}})
    plain = _batches(_csv(tmp_path / "f.csv", 100, fields=4), numeric)
    assert not make_hasher(numeric, KEY)._raw_ok(plain[0])
    _assert_same(plain, numeric)


def test_a_missing_column_is_the_same_error(tmp_path: Path) -> None:
    path = _csv(tmp_path / "g.csv", 10, fields=3)
    wider = _schema(4)  # asks for f3, which the file lacks
    batch = csvplain.RawBatch(*_first_raw(path))
    for b in (batch, batch.to_arrow()):
        with pytest.raises(RecordError, match="no column f3"):
            make_hasher(wider, KEY).batch(b)


def _first_raw(path: Path) -> tuple:
    schema = _schema(3)
    b = _batches(path, schema)[0]
    return b.buf, b.ends, b.names, b.columns, b.num_rows


def test_a_raw_batch_is_cut_at_its_end_only(tmp_path: Path) -> None:
    b = _batches(_csv(tmp_path / "h.csv", 50), _schema(5))[0]
    assert b.slice(0, 7).num_rows == 7 and b.slice(0, 7).to_arrow().equals(b.to_arrow().slice(0, 7))
    with pytest.raises(ValueError):
        b.slice(1, 3)


def test_a_label_column_of_many_strings_falls_back_within_the_raw_path(tmp_path: Path) -> None:
    schema = _schema(3)
    labels = ["0", "1"] + [f"L{i}" for i in range(70)]  # 72 distinct label strings
    raw = _batches(_csv(tmp_path / "i.csv", 2000, fields=3, labels=labels), schema)
    assert isinstance(raw[0], RawBatch) and make_hasher(schema, KEY)._raw_ok(raw[0])
    _assert_same(raw, schema)
