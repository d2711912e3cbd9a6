"""Learning from the first rows of the input before producing: quantile edges and rare-value windows.

The edges must be fixed before the first frame leaves: a value's bin label is its feature, so
edges that moved between runs would silently change what every index means. Rare-value windows
(``[rare]``) are primed the same way, so a common value's first occurrences are not suppressed.
"""
from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shared.errors import SchemaError

from producer.hashing import Hasher, as_text
from producer.schema import Schema, quantile_edges, save_edges
from producer.sources import open_source

log = logging.getLogger(__name__)

DEFAULT_SAMPLE_ROWS = 200_000


def fit_edges(schema: Schema, path: str, fmt: str | None = None, skip_rows: int = 0,
              sample_rows: int = DEFAULT_SAMPLE_ROWS, save: bool = True) -> Schema:
    """Learn the edges of every unfitted quantile column from the first ``sample_rows`` rows."""
    cols = schema.unfitted
    if not cols:
        return schema
    quant = {n.name: n.quantile_bins for n in schema.numeric if n.name in cols}
    samples: dict[str, list[float]] = {c: [] for c in cols}
    source = open_source(path, schema, tuple(cols), fmt=fmt, skip_rows=skip_rows)
    seen = 0
    for chunk in source:
        if chunk.batch is not None:
            columns = {c: chunk.batch.column(chunk.batch.schema.names.index(c)).to_pylist() for c in cols}
            rows = chunk.batch.num_rows
        else:
            recs = chunk.records or []
            columns = {c: [r.get(c) for r in recs] for c in cols}
            rows = len(recs)
        for c, values in columns.items():
            for v in values:
                t = as_text(v)
                if t is None or t in schema.missing_values:
                    continue
                try:
                    x = float(t)
                except ValueError:
                    continue  # counted as a bad row when the data is produced
                if not math.isnan(x):
                    samples[c].append(x)
        seen += rows
        if seen >= sample_rows:
            break
    edges = {c: quantile_edges(samples[c][:sample_rows], quant[c]) for c in cols}
    empty = [c for c in cols if not samples[c]]
    if empty:
        raise SchemaError(f"no numbers found to learn the edges of {empty}")
    if save:
        if schema.edges_path is None:
            raise SchemaError("the schema has no file to save edges next to")
        save_edges(schema.edges_path, edges)
        log.info("learned quantile edges of %d columns from %d rows; saved to %s", len(cols), seen,
                 schema.edges_path)
    return schema.with_edges(edges)


def _texts(rule: Any, column: pa.Array) -> list[str | None]:
    """Per row, the value string a column's value becomes (None: no feature or a bad number)."""
    arr = column if pa.types.is_dictionary(column.type) else pc.dictionary_encode(column)
    outs = [rule.outcome(e) for e in arr.dictionary.to_pylist()] + [rule.outcome(None)]
    texts = np.array([o.text if o.error is None else None for o in outs], dtype=object)
    idx = arr.indices
    if idx.null_count:
        idx = pc.fill_null(idx, len(outs) - 1)
    return texts[idx.to_numpy(zero_copy_only=False)].tolist()


def prime_rare(hasher: Hasher, path: str, fmt: str | None = None, skip_rows: int = 0) -> int:
    """Fill the hasher's rare-value windows from the first ``window`` rows of ``path`` (the rows
    are read twice, like the edges sample); returns the rows used, 0 when suppression is off."""
    rare = hasher.rare
    if not rare.enabled:
        return 0
    names = tuple(hasher.rules)
    source = open_source(path, hasher.schema, names, fmt=fmt, skip_rows=skip_rows)
    seen = 0
    for chunk in source:
        take = min(chunk.num_rows, rare.window - seen)
        for name, rule in hasher.rules.items():
            if chunk.batch is not None:
                texts = _texts(rule, chunk.batch.slice(0, take).column(name))
            else:
                outs = [rule.outcome(r.get(name)) for r in (chunk.records or [])[:take]]
                texts = [o.text if o.error is None else None for o in outs]
            rare.prime(name, texts)
        seen += take
        if seen >= rare.window:
            break
    log.info("primed rare-value windows (k=%d) from the first %d rows", rare.k, seen)
    return seen
