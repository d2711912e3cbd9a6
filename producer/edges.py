"""Learning quantile edges of numeric columns from a sample, once, and saving them by the schema.

The edges must be fixed before the first frame leaves: a value's bin label is its feature, so
edges that moved between runs would silently change what every index means.
"""
from __future__ import annotations

import logging
import math

from shared.errors import SchemaError

from producer.hashing import as_text
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
