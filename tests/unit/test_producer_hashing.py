"""The columnar and record-at-a-time paths agree index for index; value strings follow docs/schema.md."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from producer.edges import fit_edges
from producer.hashing import Hasher, make_hasher
from producer.schema import load_schema
from producer.sources import open_source
from shared.datasets import adult_dir
from shared.errors import RecordError
from shared.hashspec import FeatureHasher

ROOT = Path(__file__).resolve().parents[2]
ADULT = adult_dir()
KEY = bytes(range(32))


@pytest.fixture(scope="module")
def adult_schema(tmp_path_factory):
    d = tmp_path_factory.mktemp("schema")
    shutil.copy(ROOT / "examples" / "adult.schema.toml", d)
    schema = load_schema(d / "adult.schema.toml")
    return fit_edges(schema, str(ADULT / "adult.data"))


def _with(schema_path: Path, extra: str, tmp_path: Path, edges: Path) -> Path:
    text = schema_path.read_text()
    out = tmp_path / "adult.schema.toml"
    out.write_text(text.replace("signed = false", extra) if "signed" in extra else text + extra)
    shutil.copy(edges, tmp_path / edges.name)
    return out


def _csv_records(path: Path, names: tuple[str, ...]) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return [dict(zip(names, row)) for row in csv.reader(f) if len(row) == len(names)]


def _columnar(hasher: Hasher, schema, path: Path):
    source = open_source(str(path), schema, schema.input_columns, block_bytes=1 << 18)
    encs = [hasher.batch(c.batch) for c in source]
    off = [0]
    for e in encs:
        off += (e.offsets[1:] + off[-1]).tolist()
    vals = [e.values for e in encs if e.values is not None]
    return (np.concatenate([e.labels for e in encs]), np.array(off), np.concatenate([e.indices for e in encs]),
            np.concatenate(vals) if vals else None, source)


def _recordwise(hasher: Hasher, records):
    enc = hasher.records(records)
    return enc.labels, enc.offsets, enc.indices, enc.values


@pytest.mark.parametrize("variant, fname", [
    ("plain", "adult.data"), ("plain", "adult.test"), ("signed", "adult.data"),
    ("crosses_skip_missing", "adult.test"), ("raw_numeric", "adult.test"), ("mmh3", "adult.test")])
def test_columnar_and_record_paths_agree_on_adult(adult_schema, tmp_path, variant, fname):
    extra = {"plain": "", "signed": "signed = true",
             "crosses_skip_missing": '\n[[cross]]\nfields = ["education", "occupation"]\n'
                                     '[[cross]]\nfields = ["sex", "age"]\n',
             "raw_numeric": "", "mmh3": ""}[variant]
    path = _with(adult_schema.path, extra, tmp_path, adult_schema.edges_path)
    text = path.read_text()
    if variant == "crosses_skip_missing":
        text = text.replace('token = "__missing__"', 'policy = "skip"')
    if variant == "raw_numeric":
        text = text.replace('[numeric.capital-gain]\nbins = "quantile"\nn_bins = 20', "[numeric.capital-gain]\nraw = true")
    if variant == "mmh3":
        text = text.replace('algorithm = "blake2b"', 'algorithm = "mmh3"')
    path.write_text(text)
    schema = load_schema(path)
    col = _columnar(make_hasher(schema, KEY), schema, ADULT / fname)
    rec = _recordwise(make_hasher(schema, KEY), _csv_records(ADULT / fname, schema.names))
    n = 32561 if fname == "adult.data" else 16281
    assert col[0].shape == (n,) and rec[0].shape == (n,)
    for a, b in zip(col[:4], rec):
        if a is None:
            assert b is None
        else:
            np.testing.assert_array_equal(a, b)
    expected_pos = 7841 if fname == "adult.data" else 3846
    assert int(col[0].sum()) == expected_pos
    if variant == "signed":
        assert set(np.unique(col[3]).tolist()) == {-1.0, 1.0}
    if variant == "crosses_skip_missing":
        assert not (np.diff(col[1]) == np.diff(col[1])[0]).all()  # rows with "?" are shorter


@pytest.mark.parametrize("knob", ["KERNEL_MIN_VALUES", "VECTOR_MIN_ENTRIES"])
def test_numba_kernel_path_agrees_with_record_path(adult_schema, monkeypatch, knob):
    import producer.columnar as columnar
    import producer.rules as rules

    # every new categorical value (or: every whole categorical dictionary) goes to numba
    monkeypatch.setattr(columnar, knob, 1)
    monkeypatch.setattr(rules, "KERNEL_MIN_VALUES", 1)
    hasher = make_hasher(adult_schema, KEY)
    labels, offsets, indices, _, _ = _columnar(hasher, adult_schema, ADULT / "adult.test")
    assert hasher.cache._kernel is not None
    rec = _recordwise(make_hasher(adult_schema, KEY), _csv_records(ADULT / "adult.test", adult_schema.names))
    np.testing.assert_array_equal(indices, rec[2])
    np.testing.assert_array_equal(offsets, rec[1])
    deferred = make_hasher(adult_schema, KEY)  # first sightings batched through records() and settle()
    enc = deferred.records(_csv_records(ADULT / "adult.test", adult_schema.names))
    assert deferred.cache._kernel is not None and deferred.pending == 0
    np.testing.assert_array_equal(enc.indices, rec[2])
    np.testing.assert_array_equal(enc.offsets, rec[1])


def test_deferred_record_placeholders_settle_to_the_same_indices(adult_schema):
    recs = _csv_records(ADULT / "adult.data", adult_schema.names)[:3000]
    plain, deferred = make_hasher(adult_schema, KEY), make_hasher(adult_schema, KEY)
    want: list[int] = []
    got: list[int] = []
    for i, r in enumerate(recs):
        try:
            want += plain.record(r)[1]
        except RecordError:
            continue
        got += deferred.record(r, defer=True)[1]
        if i == 1500:  # a frame boundary in the middle
            assert deferred.pending > 0
            got = deferred.settle(got).tolist()
    assert min(got) < 0  # placeholders were handed out
    np.testing.assert_array_equal(deferred.settle(got), np.array(want, dtype=np.uint32))
    assert deferred.pending == 0


def test_indices_are_feature_hasher_of_documented_value_strings(adult_schema):
    hasher = make_hasher(adult_schema, KEY)
    fh = FeatureHasher.keyed(KEY, 20)
    rec = {"age": "39", "workclass": " ?", "fnlwgt": "77516", "education": " Bachelors", "education-num": "13",
           "marital-status": "Never-married", "occupation": "Adm-clerical", "relationship": "Not-in-family",
           "race": "White", "sex": "Male", "capital-gain": "2174", "capital-loss": "0", "hours-per-week": "40",
           "native-country": "United-States", "income": "<=50K"}
    label, idx, _ = hasher.record(rec)
    assert label == 0
    age_bin = sum(1 for e in adult_schema.numeric[0].edges if e <= 39.0)
    assert idx[0] == fh.index_sign("workclass", "__missing__")[0]
    assert idx[1] == fh.index_sign("education", "Bachelors")[0]
    assert idx[8] == fh.index_sign("age", f"bin:{age_bin}")[0]
    assert len(idx) == 14


def test_cross_value_string(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text('names = ["a", "b", "y"]\ncategorical = ["a", "b"]\n[label]\ncolumn = "y"\npositive = ["1"]\n'
                 '[[cross]]\nfields = ["a", "b"]\n')
    schema = load_schema(p)
    label, idx, _ = make_hasher(schema, KEY).record({"a": "x", "b": "z", "y": "1"})
    fh = FeatureHasher.keyed(KEY, 20)
    assert label == 1 and idx[2] == fh.index_sign("a*b", "x\x1fz")[0]


def test_raw_numeric_goes_as_value_with_empty_value_string(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text('names = ["a", "n", "y"]\ncategorical = ["a"]\n[label]\ncolumn = "y"\npositive = ["1"]\n'
                 '[numeric.n]\nraw = true\n')
    schema = load_schema(p)
    _, idx, vals = make_hasher(schema, KEY).record({"a": "x", "n": " 2.5", "y": "0"})
    assert idx[1] == FeatureHasher.keyed(KEY, 20).index_sign("n", "")[0]
    assert vals == [1.0, 2.5]


def test_parquet_and_jsonl_sources_give_the_csv_indices(adult_schema, tmp_path):
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    records = _csv_records(ADULT / "adult.test", adult_schema.names)[:3000]
    table = pa.table({c: [r[c] for r in records] for c in adult_schema.names})
    pq.write_table(table, tmp_path / "a.parquet")
    with open(tmp_path / "a.jsonl", "w") as f:
        for r in records:
            f.write(json.dumps({**r, "age": int(r["age"])}) + "\n")  # numbers as JSON numbers
    expected = _recordwise(make_hasher(adult_schema, KEY), records)
    for name in ("a.parquet", "a.jsonl"):
        hasher = make_hasher(adult_schema, KEY)
        source = open_source(str(tmp_path / name), adult_schema, adult_schema.input_columns)
        encs = [hasher.batch(c.batch) if c.batch is not None else hasher.records(c.records) for c in source]
        np.testing.assert_array_equal(np.concatenate([e.indices for e in encs]), expected[2])
        np.testing.assert_array_equal(np.concatenate([e.labels for e in encs]), expected[0])


TYPED_SCHEMA = """
categorical = ["f", "i", "b", "s"]

[hash]
algorithm = "blake2b"
bits = 20

[label]
column = "y"
positive = ["1"]
negative = ["0"]
"""


@pytest.mark.parametrize("knob", [None, "KERNEL_MIN_VALUES", "VECTOR_MIN_ENTRIES"])
def test_typed_columns_hash_as_the_record_path_writes_them(tmp_path, monkeypatch, knob):
    """Parquet columns need not be strings: a float 1.0 is "1.0" on the record path, and Arrow's
    own cast (which writes "1") must not be what the vectorised path hashes."""
    import pyarrow as pa

    import producer.columnar as columnar
    import producer.rules as rules

    if knob is not None:
        monkeypatch.setattr(columnar, knob, 1)
        monkeypatch.setattr(rules, "KERNEL_MIN_VALUES", 1)
    (tmp_path / "s.toml").write_text(TYPED_SCHEMA)
    schema = load_schema(tmp_path / "s.toml")
    rng = np.random.default_rng(3)
    n = 3000
    floats = rng.integers(0, 2500, n).astype(np.float64)  # whole numbers: where the casts differ
    floats[::7] = np.nan
    batch = pa.RecordBatch.from_pydict({
        "f": pa.array(floats), "i": pa.array(rng.integers(-5000, 5000, n)),
        "b": pa.array(rng.random(n) < 0.5), "s": pa.array([f" v{k} " for k in rng.integers(0, 3000, n)]),
        "y": pa.array(rng.integers(0, 2, n)),
    })
    col = make_hasher(schema, KEY).batch(batch)
    rec = make_hasher(schema, KEY).records(batch.to_pylist())
    assert col.n == rec.n == n
    np.testing.assert_array_equal(col.offsets, rec.offsets)
    np.testing.assert_array_equal(col.indices, rec.indices)
    np.testing.assert_array_equal(col.labels, rec.labels)
