"""The label pass over raw bytes gives exactly the dictionary path's labels (the rule, per string)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from producer.labelcodes import MAX_KNOWN, LabelCodes
from producer.rules import LabelRule
from producer.schema import parse_schema

BASE = {"names": ["a", "y"], "categorical": ["a"]}


def _rule(label: dict) -> LabelRule:
    return LabelRule(parse_schema({**BASE, "label": {"column": "y", **label}}))


def _reference(rule: LabelRule, arr: pa.Array) -> np.ndarray:
    return np.array([rule.label(v) for v in arr.to_pylist()], dtype=np.int8)


RULES = [{"positive": ["1"], "negative": ["0"]}, {"positive": [">50K", ">50K."]},
         {"positive": ["yes", "1"], "negative": ["no", "0"]}]
VALUES = ["1", "0", " 1", "0 ", "", "yes", "no", ">50K", ">50K.", "<=50K", "?", "NA", "é", "10", "01"]


@pytest.mark.parametrize("label", RULES)
@pytest.mark.parametrize("string_type", [pa.string(), pa.large_string()])
def test_random_label_columns_match_the_rule(label: dict, string_type: pa.DataType) -> None:
    rule, rng = _rule(label), np.random.default_rng(7)
    codes = LabelCodes(rule)
    for size in (0, 1, 5, 1000, 40_000):  # batches after batches: the known strings carry over
        arr = pa.array([VALUES[i] for i in rng.integers(0, len(VALUES), size)], type=string_type)
        got = codes.labels(arr)
        assert got is not None and got.dtype == np.int8
        assert np.array_equal(got, _reference(rule, arr))
    assert len(codes.known) == len(set(codes.known)) <= len(VALUES)


def test_a_slice_is_read_at_its_own_rows() -> None:
    rule = _rule(RULES[0])
    arr = pa.array(["0", "1", "1", "0", "x", "1"]).slice(2, 3)
    assert np.array_equal(LabelCodes(rule).labels(arr), _reference(rule, arr))


def test_nulls_other_types_and_too_many_strings_take_the_dictionary_path() -> None:
    codes = LabelCodes(_rule(RULES[0]))
    assert codes.labels(pa.array(["1", None, "0"])) is None
    assert codes.labels(pa.array([1, 0, 1])) is None
    many = pa.array([str(i) for i in range(MAX_KNOWN + 5)])
    assert codes.labels(many) is None
    assert len(codes.known) == MAX_KNOWN  # bounded, and the common strings still answer
    assert np.array_equal(codes.labels(pa.array(["1", "0", "1"])), np.array([1, 0, 1], dtype=np.int8))
