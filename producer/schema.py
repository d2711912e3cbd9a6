"""The owner's schema: which columns become which feature strings, and which never leave home.

A schema is a TOML file written once by the data owner (``hashbridge schema infer`` drafts one).
Every input column must be placed somewhere (label, id, drop, categorical or numeric) so that a
new column cannot be published by accident. ``docs/schema.md`` documents the exact value string
each feature becomes; :mod:`producer.hashing` is the only consumer of the compiled form.
"""
from __future__ import annotations

import json
import logging
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from shared.errors import SchemaError
from shared.hashspec import MAX_BITS, Algorithm

log = logging.getLogger(__name__)

DEFAULT_BITS = 20
DEFAULT_MISSING_VALUES = ("", "?")
DEFAULT_MISSING_TOKEN = "__missing__"
BIN_PREFIX = "bin:"  # numeric bin i (count of edges <= x) becomes the value string "bin:<i>"
CROSS_FIELD_JOIN = "*"  # cross of fields a and b is the field "a*b"
CROSS_VALUE_JOIN = "\x1f"  # its value is "<value of a>\x1f<value of b>"
_TOP_KEYS = {"version", "names", "header", "delimiter", "hash", "label", "id", "drop", "missing",
             "categorical", "numeric", "cross", "edges_file", "rare"}
DEFAULT_RARE_WINDOW = 100_000


@dataclass(frozen=True, slots=True)
class NumericColumn:
    """How one numeric column becomes a feature: fixed edges, quantile edges, or the raw number."""

    name: str
    edges: tuple[float, ...] | None = None  # fixed, or learned (quantile) and loaded from the edges file
    quantile_bins: int = 0  # > 0: edges are learned from a sample
    raw: bool = False  # explicit opt-in: the number itself is sent as the feature's value


@dataclass(frozen=True, slots=True)
class Label:
    column: str
    positive: frozenset[str]
    negative: frozenset[str] | None  # None: any other non-missing value is negative


@dataclass(frozen=True, slots=True)
class Schema:
    """The compiled schema; features come out in the order categorical, numeric, crosses."""

    categorical: tuple[str, ...]
    numeric: tuple[NumericColumn, ...] = ()
    crosses: tuple[tuple[str, str], ...] = ()
    label: Label | None = None
    id_column: str | None = None
    drop: tuple[str, ...] = ()
    names: tuple[str, ...] | None = None
    header: bool = True
    delimiter: str = ","
    bits: int = DEFAULT_BITS
    signed: bool = False
    algorithm: Algorithm = Algorithm.BLAKE2B_KEYED
    seed: int = 0
    missing_values: frozenset[str] = frozenset(DEFAULT_MISSING_VALUES)
    missing_token: str | None = DEFAULT_MISSING_TOKEN  # None: a missing value yields no feature
    path: Path | None = None
    edges_path: Path | None = None
    rare_k: int = 0  # > 1: a value seen fewer than k times in the last rare_window records is "__rare__"
    rare_window: int = DEFAULT_RARE_WINDOW
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def feature_fields(self) -> tuple[str, ...]:
        """Field names of the features in output order (crosses as ``a*b``)."""
        return (self.categorical + tuple(n.name for n in self.numeric)
                + tuple(a + CROSS_FIELD_JOIN + b for a, b in self.crosses))

    @property
    def input_columns(self) -> tuple[str, ...]:
        """Columns read from the input (label and features; the id only where asked for)."""
        cols = list(self.categorical) + [n.name for n in self.numeric]
        if self.label is not None:
            cols.append(self.label.column)
        return tuple(cols)

    @property
    def needs_values(self) -> bool:
        return self.signed or any(n.raw for n in self.numeric)

    @property
    def unfitted(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.numeric if n.quantile_bins and n.edges is None)

    def with_edges(self, edges: Mapping[str, list[float]]) -> "Schema":
        cols = tuple(NumericColumn(n.name, tuple(float(e) for e in edges[n.name]), n.quantile_bins, n.raw)
                     if n.name in edges and n.quantile_bins else n for n in self.numeric)
        return _replace(self, numeric=cols)


def _replace(schema: Schema, **changes: Any) -> Schema:
    from dataclasses import replace
    return replace(schema, **changes)


def _str_list(doc: Mapping[str, Any], key: str, where: str) -> list[str]:
    value = doc.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SchemaError(f"{where}: '{key}' must be a list of strings")
    return list(value)


def _table(doc: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise SchemaError(f"schema: [{key}] must be a table")
    return value


def _no_unknown(table: Mapping[str, Any], name: str, allowed: set[str]) -> None:
    unknown = set(table) - allowed
    if unknown:
        hint = " (top-level keys must come before the first [table] in TOML)" if unknown & _TOP_KEYS else ""
        raise SchemaError(f"[{name}]: unknown keys {sorted(unknown)}{hint}")


def _parse_hash(doc: Mapping[str, Any]) -> dict[str, Any]:
    h = _table(doc, "hash")
    _no_unknown(h, "hash", {"algorithm", "bits", "signed", "seed"})
    algo = h.get("algorithm", "blake2b")
    algos = {"blake2b": Algorithm.BLAKE2B_KEYED, "mmh3": Algorithm.MMH3_PUBLIC}
    if algo not in algos:
        raise SchemaError(f"[hash]: algorithm must be 'blake2b' or 'mmh3', got {algo!r}")
    bits = h.get("bits", DEFAULT_BITS)
    if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= MAX_BITS:
        raise SchemaError(f"[hash]: bits must be an integer in 1..{MAX_BITS}, got {bits!r}")
    signed = h.get("signed", False)
    if not isinstance(signed, bool):
        raise SchemaError("[hash]: signed must be true or false")
    seed = h.get("seed", 0)
    if not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise SchemaError("[hash]: seed must be an integer in 0..2^32-1")
    return {"algorithm": algos[algo], "bits": bits, "signed": signed, "seed": seed}


def _parse_numeric(doc: Mapping[str, Any]) -> tuple[NumericColumn, ...]:
    cols = []
    for name, spec in _table(doc, "numeric").items():
        if not isinstance(spec, dict):
            raise SchemaError(f"[numeric.{name}] must be a table (e.g. bins = \"quantile\", n_bins = 20)")
        unknown = set(spec) - {"bins", "n_bins", "edges", "raw"}
        if unknown:
            raise SchemaError(f"[numeric.{name}]: unknown keys {sorted(unknown)}")
        raw = spec.get("raw", False)
        if raw is True:
            if "edges" in spec or "bins" in spec:
                raise SchemaError(f"[numeric.{name}]: raw = true sends the number; it takes no bins or edges")
            cols.append(NumericColumn(name, raw=True))
            continue
        if "edges" in spec:
            edges = spec["edges"]
            if (not isinstance(edges, list) or not edges
                    or not all(isinstance(e, (int, float)) and not isinstance(e, bool) for e in edges)
                    or any(math.isnan(e) for e in edges) or list(edges) != sorted(set(edges))):
                raise SchemaError(f"[numeric.{name}]: edges must be a non-empty strictly increasing list of numbers")
            cols.append(NumericColumn(name, edges=tuple(float(e) for e in edges)))
            continue
        if spec.get("bins") != "quantile":
            raise SchemaError(f"[numeric.{name}]: give edges = [...], bins = \"quantile\" (with n_bins) or raw = true")
        n_bins = spec.get("n_bins", 10)
        if not isinstance(n_bins, int) or not 2 <= n_bins <= 1000:
            raise SchemaError(f"[numeric.{name}]: n_bins must be an integer in 2..1000")
        cols.append(NumericColumn(name, quantile_bins=n_bins))
    return tuple(cols)


def _parse_label(doc: Mapping[str, Any]) -> Label | None:
    if "label" not in doc:
        return None
    lab = _table(doc, "label")
    if not isinstance(lab.get("column"), str):
        raise SchemaError("[label]: 'column' (the label column's name) is required")
    positive = _str_list(lab, "positive", "[label]")
    if not positive:
        raise SchemaError("[label]: 'positive' must list at least one value")
    negative = _str_list(lab, "negative", "[label]") if "negative" in lab else None
    if negative is not None and set(positive) & set(negative):
        raise SchemaError("[label]: a value cannot be both positive and negative")
    return Label(lab["column"], frozenset(positive), frozenset(negative) if negative is not None else None)


def _parse_rare(doc: Mapping[str, Any]) -> dict[str, int]:
    rare = _table(doc, "rare")
    _no_unknown(rare, "rare", {"k", "window"})
    window = rare.get("window", DEFAULT_RARE_WINDOW)
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
        raise SchemaError(f"[rare]: window must be a positive integer, got {window!r}")
    k = rare.get("k", 0)
    if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k <= window:
        raise SchemaError(f"[rare]: k must be an integer in 0..window ({window}), got {k!r}")
    return {"rare_k": k, "rare_window": window}


def parse_schema(doc: Mapping[str, Any], path: Path | None = None) -> Schema:
    """Compile a parsed TOML document; every problem raises :class:`SchemaError` naming the key."""
    unknown = set(doc) - _TOP_KEYS
    if unknown:
        raise SchemaError(f"schema: unknown top-level keys {sorted(unknown)}")
    names = _str_list(doc, "names", "schema") if "names" in doc else None
    header = doc.get("header", names is None)
    if not isinstance(header, bool):
        raise SchemaError("schema: header must be true or false")
    delimiter = doc.get("delimiter", ",")
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise SchemaError("schema: delimiter must be one character")
    categorical = _str_list(doc, "categorical", "schema")
    numeric = _parse_numeric(doc)
    label = _parse_label(doc)
    id_table = _table(doc, "id")
    id_column = id_table.get("column")
    if id_column is not None and not isinstance(id_column, str):
        raise SchemaError("[id]: 'column' must be a string")
    drop = _str_list(doc, "drop", "schema")
    missing = _table(doc, "missing")
    _no_unknown(missing, "missing", {"values", "token", "policy"})
    _no_unknown(id_table, "id", {"column"})
    if "label" in doc:
        _no_unknown(_table(doc, "label"), "label", {"column", "positive", "negative"})
    missing_values = _str_list(missing, "values", "[missing]") if "values" in missing else list(DEFAULT_MISSING_VALUES)
    policy = missing.get("policy", "token")
    if policy not in ("token", "skip"):
        raise SchemaError("[missing]: policy must be 'token' or 'skip'")
    token = missing.get("token", DEFAULT_MISSING_TOKEN)
    if not isinstance(token, str):
        raise SchemaError("[missing]: token must be a string")
    crosses = []
    for i, cross in enumerate(doc.get("cross", [])):
        fields = cross.get("fields") if isinstance(cross, dict) else None
        if not (isinstance(fields, list) and len(fields) == 2 and all(isinstance(f, str) for f in fields)):
            raise SchemaError(f"[[cross]] #{i + 1}: fields must be a list of two column names")
        crosses.append((fields[0], fields[1]))
    places: dict[str, str] = {}
    roles = ([(c, "categorical") for c in categorical] + [(n.name, "numeric") for n in numeric]
             + [(c, "drop") for c in drop] + ([(label.column, "label")] if label else [])
             + ([(id_column, "id")] if id_column else []))
    for col, role in roles:
        if col in places:
            raise SchemaError(f"schema: column {col!r} is both {places[col]} and {role}")
        places[col] = role
    raw_cols = {n.name for n in numeric if n.raw}
    for a, b in crosses:
        for f in (a, b):
            if places.get(f) not in ("categorical", "numeric") or f in raw_cols:
                raise SchemaError(f"[[cross]] {a} x {b}: {f!r} is not a categorical or binned numeric column")
    if names is not None:
        if len(set(names)) != len(names):
            raise SchemaError("schema: names has duplicates")
        unplaced = [n for n in names if n not in places]
        if unplaced:
            raise SchemaError(f"schema: columns {unplaced} are not placed; list each under categorical, "
                              "[numeric.*], drop, [label] or [id] (nothing is published by default)")
        unknown_cols = [c for c in places if c not in names]
        if unknown_cols:
            raise SchemaError(f"schema: columns {unknown_cols} are not in names")
    if not categorical and not numeric:
        raise SchemaError("schema: no feature columns (categorical or numeric)")
    edges_file = doc.get("edges_file")
    if edges_file is not None and not isinstance(edges_file, str):
        raise SchemaError("schema: edges_file must be a path string")
    edges_path = None
    if path is not None:
        edges_path = path.parent / (edges_file or path.name.removesuffix(".toml").removesuffix(".schema") + ".edges.json")
    elif edges_file:
        edges_path = Path(edges_file)
    schema = Schema(
        categorical=tuple(categorical), numeric=numeric, crosses=tuple(crosses), label=label,
        id_column=id_column, drop=tuple(drop), names=tuple(names) if names else None, header=header,
        delimiter=delimiter, missing_values=frozenset(missing_values),
        missing_token=token if policy == "token" else None, path=path, edges_path=edges_path,
        **_parse_hash(doc), **_parse_rare(doc))
    if schema.algorithm is Algorithm.MMH3_PUBLIC:
        log.warning("INSECURE: schema selects mmh3 with a public seed; anyone can invert these indices "
                    "with a dictionary attack. Use only for benchmarks and non-sensitive data.")
    for col in raw_cols:
        log.warning("schema sends the raw number of column %s: the number itself is the data", col)
    if schema.edges_path is not None and schema.edges_path.exists():
        schema = schema.with_edges(load_edges(schema.edges_path))
    return schema


def load_schema(path: str | Path) -> Schema:
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SchemaError(f"schema file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise SchemaError(f"schema file {path} is not valid TOML: {exc}") from None
    return parse_schema(doc, path)


def load_edges(path: Path) -> dict[str, list[float]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SchemaError(f"edges file {path} cannot be read: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise SchemaError(f"edges file {path} must map column names to lists of edges")
    return data


def save_edges(path: Path, edges: Mapping[str, list[float]]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(dict(edges), indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)


def quantile_edges(values: list[float], n_bins: int) -> list[float]:
    """Inner quantile edges of a sample; repeated edges collapse (a heavy value gets one bin)."""
    import numpy as np

    arr = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if arr.size == 0:
        return [0.0]
    qs = np.quantile(arr, np.linspace(0, 1, n_bins + 1)[1:-1])
    edges = sorted(set(float(q) for q in qs))
    return edges or [float(arr[0])]
