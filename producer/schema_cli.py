"""``hashbridge schema``: draft a schema from a sample (``infer``), learn numeric edges (``fit``),
and check a schema (``check``). The draft is for the owner to edit, never to publish unread.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from shared.errors import ConfigError, HashbridgeError
from shared.logs import setup_logging

from producer.edges import fit_edges
from producer.schema import load_schema

IDENTIFIER_NAMES = re.compile(r"(^|[_\- ])(name|email|e-mail|mail|phone|ssn|address|ip)($|[_\- ])", re.I)
ID_NAMES = re.compile(r"^(id|.*[_\-]id|uuid|key)$", re.I)
MAX_CATEGORICAL_NUMERIC = 20  # a numeric column with fewer distinct values stays categorical


def _q(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)  # a JSON string is a valid TOML basic string


def _read_sample(path: str, names: list[str] | None, no_header: bool, delimiter: str, rows: int,
                 skip_rows: int) -> pa.Table:
    if path.endswith((".parquet", ".pq")):
        pf = pq.ParquetFile(path)
        return pa.Table.from_batches([next(pf.iter_batches(batch_size=rows))])
    read = pacsv.ReadOptions(column_names=names, autogenerate_column_names=no_header and not names,
                             skip_rows=skip_rows, block_size=1 << 20)
    parse = pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=lambda _row: "skip")
    reader = pacsv.open_csv(path, read_options=read, parse_options=parse)
    batches, n = [], 0
    for batch in reader:
        batches.append(batch)
        n += batch.num_rows
        if n >= rows:
            break
    return pa.Table.from_batches(batches).slice(0, rows)


def infer(table: pa.Table, names_given: bool, delimiter: str, bits: int) -> str:
    """A draft schema as TOML text: every column placed, with a comment saying why."""
    cols = table.column_names
    label = cols[-1]
    label_values = table.column(label).cast(pa.string()).to_pylist()
    counts: dict[str, int] = {}
    for v in label_values:
        k = (v or "").strip()
        counts[k] = counts.get(k, 0) + 1
    ordered = sorted(counts, key=counts.get)  # type: ignore[arg-type]
    cats, nums, drop, notes = [], [], [], []
    id_col = None
    for c in cols[:-1]:
        col = table.column(c)
        distinct = len(pa.compute.unique(col))
        if ID_NAMES.match(c) and id_col is None:
            id_col = c
            continue
        if IDENTIFIER_NAMES.search(c) or (pa.types.is_string(col.type) and distinct > 0.9 * max(len(col), 1) > 100):
            drop.append(c)
            notes.append(f"# {c}: looks like a direct identifier (name or mostly unique): dropped, not hashed")
            continue
        if (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)) and distinct > MAX_CATEGORICAL_NUMERIC:
            nums.append(c)
        else:
            cats.append(c)
    out = ["# Draft schema from 'hashbridge schema infer': read it, edit it, then use it.",
           "# Every column must be placed; nothing is published unless listed below.", "version = 1"]
    if names_given:
        out.append("header = false")
        out.append("names = [" + ", ".join(_q(c) for c in cols) + "]")
    if delimiter != ",":
        out.append(f"delimiter = {_q(delimiter)}")
    out += notes
    out.append("drop = [" + ", ".join(_q(c) for c in drop) + "]")
    out.append("categorical = [" + ", ".join(_q(c) for c in cats) + "]")
    out += ["", "[hash]", 'algorithm = "blake2b"  # "mmh3" is an insecure public mode', f"bits = {bits}",
            "signed = false", "", "[label]", f"column = {_q(label)}",
            f"positive = [{_q(ordered[0]) if ordered else ''}]  # check: the rarer value was guessed",
            "", "[missing]", 'values = ["", "?"]', 'token = "__missing__"']
    if id_col:
        out += ["", "[id]  # kept at home, never sent", f"column = {_q(id_col)}"]
    for c in nums:
        out += ["", f"[numeric.{_q(c)}]", 'bins = "quantile"', "n_bins = 10"]
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    setup_logging()
    p = argparse.ArgumentParser(prog="hashbridge schema", description="Draft, fit and check schemas.")
    sub = p.add_subparsers(dest="cmd", required=True)
    pi = sub.add_parser("infer", help="draft a schema from a sample of a CSV or Parquet file")
    pi.add_argument("data")
    pi.add_argument("--out", help="write the draft here (default: stdout); never overwrites")
    pi.add_argument("--no-header", action="store_true", help="the file has no header row")
    pi.add_argument("--names", help="comma-separated column names (for files without a header)")
    pi.add_argument("--delimiter", default=",")
    pi.add_argument("--skip-rows", type=int, default=0)
    pi.add_argument("--rows", type=int, default=20000, help="rows to sample")
    pi.add_argument("--bits", type=int, default=20)
    pf = sub.add_parser("fit", help="learn quantile edges of numeric columns, saved next to the schema")
    pf.add_argument("data")
    pf.add_argument("--schema", required=True)
    pf.add_argument("--skip-rows", type=int, default=0)
    pf.add_argument("--rows", type=int, default=200_000, help="rows to sample")
    pc_ = sub.add_parser("check", help="parse a schema and say what it publishes")
    pc_.add_argument("schema")
    args = p.parse_args(argv)
    try:
        if args.cmd == "infer":
            names = [n.strip() for n in args.names.split(",")] if args.names else None
            table = _read_sample(args.data, names, args.no_header or bool(names), args.delimiter, args.rows,
                                 args.skip_rows)
            if names is None and args.no_header:
                table = table.rename_columns([f"c{i}" for i in range(table.num_columns)])
            text = infer(table, bool(names) or args.no_header, args.delimiter, args.bits)
            if args.out:
                if Path(args.out).exists():
                    raise ConfigError(f"{args.out} exists; not overwriting the owner's schema")
                Path(args.out).write_text(text, encoding="utf-8")
                print(f"wrote draft schema {args.out}: edit it before use", file=sys.stderr)
            else:
                sys.stdout.write(text)
        elif args.cmd == "fit":
            schema = load_schema(args.schema)
            if not schema.unfitted:
                print("no quantile columns left to fit (delete the edges file to refit)", file=sys.stderr)
                return 0
            fit_edges(schema, args.data, skip_rows=args.skip_rows, sample_rows=args.rows)
            print(f"saved edges to {schema.edges_path}", file=sys.stderr)
        else:
            schema = load_schema(args.schema)
            print(f"features: {', '.join(schema.feature_fields)}")
            print(f"label: {schema.label.column if schema.label else '(none)'}; id kept at home: "
                  f"{schema.id_column or '(none)'}; dropped: {', '.join(schema.drop) or '(none)'}")
            print(f"hash: {schema.algorithm.name.lower()}, {schema.bits} bits, "
                  f"{'signed' if schema.signed else 'unsigned'}; unfitted numeric: {list(schema.unfitted)}")
    except (HashbridgeError, pa.ArrowInvalid, OSError) as exc:
        print(f"hashbridge schema: {exc}", file=sys.stderr)
        return 2
    return 0
