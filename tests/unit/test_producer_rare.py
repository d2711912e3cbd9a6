"""Rare-value suppression wired into the producer: schema [rare], both hashing paths, priming."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from producer.edges import fit_edges, prime_rare
from producer.hashing import Hasher, make_hasher
from producer.rare import RARE_TOKEN
from producer.schema import load_schema, parse_schema
from producer.sources import open_source
from shared.datasets import adult_dir
from shared.errors import RecordError, SchemaError
from shared.hashspec import FeatureHasher

ROOT = Path(__file__).resolve().parents[2]
ADULT = adult_dir()
KEY = bytes(range(32))
SMALL = {"names": ["a", "b", "n", "y"], "categorical": ["a", "b"], "numeric": {"n": {"edges": [1, 10]}},
         "label": {"column": "y", "positive": ["1"], "negative": ["0"]}}


def _schema_file(tmp_path: Path, rare: str, cross: bool = False) -> Path:
    shutil.copy(ROOT / "examples" / "adult.schema.toml", tmp_path)
    path = tmp_path / "adult.schema.toml"
    text = path.read_text() + rare
    if cross:
        text += '\n[[cross]]\nfields = ["education", "occupation"]\n'
    path.write_text(text)
    return path


def _columnar(hasher: Hasher, path: Path, block: int = 1 << 16) -> tuple[np.ndarray, np.ndarray]:
    encs = [hasher.batch(c.batch) for c in open_source(str(path), hasher.schema, hasher.schema.input_columns,
                                                        block_bytes=block)]
    sizes = np.concatenate([np.diff(e.offsets) for e in encs])
    return sizes, np.concatenate([e.indices for e in encs])


def _records(path: Path, names: tuple[str, ...]) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return [dict(zip(names, row)) for row in csv.reader(f) if len(row) == len(names)]


def test_rare_table_is_parsed_and_checked():
    assert parse_schema(SMALL).rare_k == 0 and parse_schema(SMALL).rare_window == 100_000
    s = parse_schema({**SMALL, "rare": {"k": 5, "window": 1000}})
    assert (s.rare_k, s.rare_window) == (5, 1000)
    for bad, msg in (({"k": -1}, "k must be"), ({"k": 11, "window": 10}, "k must be"),
                     ({"window": 0}, "window must be"), ({"k": 2, "span": 3}, "unknown keys"),
                     ({"k": True}, "k must be")):
        with pytest.raises(SchemaError, match=msg):
            parse_schema({**SMALL, "rare": bad})


@pytest.mark.parametrize("cross", [False, True])
def test_columnar_and_record_paths_agree_with_suppression_on(tmp_path, cross):
    path = _schema_file(tmp_path, "\n[rare]\nk = 20\nwindow = 3000\n", cross)
    schema = fit_edges(load_schema(path), str(ADULT / "adult.data"))
    col_hasher = make_hasher(schema, KEY)
    sizes, indices = _columnar(col_hasher, ADULT / "adult.test")
    rec_hasher = make_hasher(schema, KEY)
    enc = rec_hasher.records(_records(ADULT / "adult.test", schema.names))
    np.testing.assert_array_equal(sizes, np.diff(enc.offsets))
    np.testing.assert_array_equal(indices, enc.indices)
    assert col_hasher.rare.suppressed == rec_hasher.rare.suppressed
    assert sum(col_hasher.rare.suppressed.values()) > 1000  # the test really suppresses something
    rare_occ = FeatureHasher.keyed(KEY, schema.bits).index_sign("occupation", RARE_TOKEN)[0]
    assert rare_occ in set(indices.tolist())


def test_bad_rows_still_count_in_the_window_on_both_paths(tmp_path):
    schema = parse_schema({**SMALL, "rare": {"k": 2, "window": 4}})
    rows = [("x", "p", "5", "1"), ("x", "q", "oops", "0"), ("x", "p", "5", "maybe"), ("y", "q", "50", "1"),
            ("x", "p", "0", "0"), ("y", "r", "", "1")]
    path = tmp_path / "d.csv"
    path.write_text("".join(",".join(r) + "\n" for r in rows))
    col = make_hasher(schema, KEY)
    enc_c = col.batch(next(iter(open_source(str(path), schema, schema.input_columns))).batch)
    rec = make_hasher(schema, KEY)
    enc_r = rec.records([dict(zip(schema.names, r)) for r in rows])
    np.testing.assert_array_equal(enc_c.indices, enc_r.indices)
    assert [b[2] for b in enc_r.bad] == ["bad_number", "bad_label"] == [b[2] for b in enc_c.bad]
    with pytest.raises(RecordError, match="bad_label"):
        make_hasher(schema, KEY).record(dict(zip(schema.names, rows[2])))


def test_a_value_seen_fewer_than_k_times_is_published_as_the_rare_bucket():
    schema = parse_schema({**SMALL, "rare": {"k": 3, "window": 100}})
    h = make_hasher(schema, KEY)
    fh = FeatureHasher.keyed(KEY, schema.bits)
    rare_a, common = fh.index_sign("a", RARE_TOKEN)[0], fh.index_sign("a", "common")[0]
    got = [h.record({"a": v, "b": "z", "n": "3", "y": "1"})[1][0] for v in ["common"] * 4 + ["once"]]
    assert got == [rare_a, rare_a, common, common, rare_a]


def test_suppression_is_off_by_default_and_k_1_changes_nothing(tmp_path):
    recs = _records(ADULT / "adult.test", load_schema(ROOT / "examples" / "adult.schema.toml").names)[:2000]
    out = []
    for rare in ("", "\n[rare]\nk = 1\n", "\n[rare]\nk = 0\nwindow = 5\n"):
        d = tmp_path / str(len(out))
        d.mkdir()
        schema = fit_edges(load_schema(_schema_file(d, rare)), str(ADULT / "adult.data"))
        h = make_hasher(schema, KEY)
        assert not h.rare.enabled
        out.append(h.records(recs).indices)
    np.testing.assert_array_equal(out[0], out[1])
    np.testing.assert_array_equal(out[0], out[2])


def test_priming_keeps_a_common_value_from_its_first_row(tmp_path):
    schema = parse_schema({**SMALL, "rare": {"k": 3, "window": 10}})
    path = tmp_path / "d.csv"
    path.write_text("common,z,3,1\n" * 5)
    h = make_hasher(schema, KEY)
    assert prime_rare(h, str(path)) == 5
    common = FeatureHasher.keyed(KEY, schema.bits).index_sign("a", "common")[0]
    assert h.record({"a": "common", "b": "z", "n": "3", "y": "1"})[1][0] == common
    assert prime_rare(make_hasher(parse_schema(SMALL), KEY), str(path)) == 0  # off: nothing read
