"""Schema parsing: a usable schema compiles; every mistake names the key or column at fault."""
from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from producer.schema import load_schema, parse_schema
from shared.errors import SchemaError
from shared.hashspec import Algorithm

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "adult.schema.toml"
BASE = """
names = ["id", "color", "size", "y", "email"]
drop = ["email"]
categorical = ["color"]
[label]
column = "y"
positive = ["1"]
[id]
column = "id"
[numeric.size]
edges = [1, 10, 100]
"""


def parse(text: str):
    return parse_schema(tomllib.loads(text))


def test_adult_example_parses(tmp_path):
    s = load_schema(EXAMPLE)
    assert s.label is not None and s.label.positive == {">50K", ">50K."}
    assert s.names is not None and len(s.names) == 15 and not s.header
    assert set(s.unfitted) <= {"age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"}
    assert s.bits == 20 and s.algorithm is Algorithm.BLAKE2B_KEYED


def test_base_schema_compiles():
    s = parse(BASE)
    assert s.feature_fields == ("color", "size")
    assert s.id_column == "id" and s.drop == ("email",)
    assert s.numeric[0].edges == (1.0, 10.0, 100.0)
    assert s.input_columns == ("color", "size", "y")  # never the id, never dropped columns


@pytest.mark.parametrize("text, match", [
    (BASE.replace('drop = ["email"]\n', ""), r"\['email'\] are not placed"),
    (BASE + "[hash]\nbits = 40\n", "bits must be an integer in 1..31"),
    (BASE + "[hash]\nalgorithm = \"md5\"\n", "algorithm must be 'blake2b' or 'mmh3'"),
    (BASE + "[hash]\nbitz = 3\n", r"\[hash\]: unknown keys \['bitz'\]"),
    (BASE.replace("edges = [1, 10, 100]", "edges = [10, 1]"), "strictly increasing"),
    (BASE.replace("edges = [1, 10, 100]", "bins = \"uniform\""), r"\[numeric.size\]: give edges"),
    (BASE.replace('positive = ["1"]', "positive = []"), "at least one value"),
    (BASE.replace('column = "y"', ""), "'column'.*required"),
    (BASE.replace('categorical = ["color"]', 'categorical = ["color", "email"]'), "both categorical and drop"),
    (BASE + "[[cross]]\nfields = [\"color\", \"nope\"]\n", "'nope' is not a categorical"),
    (BASE + "[[cross]]\nfields = [\"color\"]\n", "two column names"),
    (BASE + "colour = 1\n", r"\[numeric.size\]: unknown keys"),
    ("colour = 1\n" + BASE, "unknown top-level keys"),
    (BASE + "[missing]\npolicy = \"zero\"\n", "policy must be 'token' or 'skip'"),
])
def test_schema_errors_are_clear(text, match):
    with pytest.raises(SchemaError, match=match):
        parse(text)


def test_key_after_table_gets_a_toml_hint():
    text = BASE.replace('categorical = ["color"]\n', "") + '[missing]\ntoken = "NA"\ncategorical = ["color"]\n'
    with pytest.raises(SchemaError, match="top-level keys must come before"):
        parse(text)


def test_invalid_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("names = [\n")
    with pytest.raises(SchemaError, match="not valid TOML"):
        load_schema(bad)
    with pytest.raises(SchemaError, match="does not exist"):
        load_schema(tmp_path / "none.toml")


def test_raw_numeric_and_mmh3_warn(caplog):
    text = BASE.replace("edges = [1, 10, 100]", "raw = true") + "[hash]\nalgorithm = \"mmh3\"\n"
    s = parse(text)
    assert s.numeric[0].raw and s.needs_values and s.algorithm is Algorithm.MMH3_PUBLIC
    assert "INSECURE" in caplog.text and "raw number of column size" in caplog.text
