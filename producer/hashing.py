"""Records to feature indices: a columnar path for files and a record-at-a-time path for the API.

Both paths turn each input value into the same value string (:class:`ColumnRule`) and hash
``(field, value string)`` with :class:`shared.hashspec.FeatureHasher`, through one bounded digest
cache per field, so they give identical indices for the same record. The columnar path hashes
each distinct value of a column batch once and maps the batch's dictionary codes to indices with
numpy, which keeps the keyed hash off the per-row budget.
"""
from __future__ import annotations

import operator
from typing import Any, Mapping

import numpy as np
import pyarrow as pa

from shared.errors import ConfigError, RecordError
from shared.hashspec import FeatureHasher

from producer.columnar import ColumnarPath, EncodedBatch
from producer.labelcodes import LabelCodes
from producer.rare import RareSuppressor
from producer.rules import CACHE_LIMIT, WHITESPACE, ColumnRule, DigestCache, LabelRule, Outcome, as_text
from producer.schema import CROSS_FIELD_JOIN, CROSS_VALUE_JOIN, Schema

__all__ = ["CACHE_LIMIT", "WHITESPACE", "ColumnRule", "DigestCache", "EncodedBatch", "Hasher", "LabelRule",
           "Outcome", "as_text", "make_hasher"]


def _record_error(reason: str, column: str) -> RecordError:
    err = RecordError(f"{reason} in column {column}", reason)
    err.column = column  # type: ignore[attr-defined]
    return err


class Hasher(ColumnarPath):
    """Both hashing paths over one schema, one key and one digest cache."""

    def __init__(self, schema: Schema, hasher: FeatureHasher, key: bytes | None = None) -> None:
        if hasher.spec.bits != schema.bits or hasher.spec.signed != schema.signed:
            raise ValueError("hasher spec does not match the schema's bits/signed")
        self.schema, self.spec = schema, hasher.spec
        self.cache = DigestCache(hasher, key=key)
        self.mask = np.uint64((1 << schema.bits) - 1)
        self.rules = {c: ColumnRule(schema, c) for c in schema.categorical + tuple(n.name for n in schema.numeric)}
        self.label_rule = LabelRule(schema) if schema.label is not None else None
        self.cross_fields = [a + CROSS_FIELD_JOIN + b for a, b in schema.crosses]
        self.needs_values = schema.needs_values
        self._imask = (1 << schema.bits) - 1
        self._label_col = schema.label.column if schema.label is not None else ""
        self._record_fields = [(name, rule, {}) for name, rule in self.rules.items()]
        self.rare = RareSuppressor(schema.rare_k, schema.rare_window)  # off unless [rare] k >= 2
        # fast record path: one C-level map over per-field caches of input string -> index, taken
        # when every value is a cached string (no values array, no crosses, no rare suppression)
        self._fast_ok = (bool(self.rules) and not self.needs_values and not self.cross_fields
                         and not self.rare.enabled)
        self._fast_by_name: dict[str, dict[str, int]] = {name: {} for name in self.rules}
        self._fast_caches = [self._fast_by_name[name] for name in self.rules]
        names = list(self.rules)
        self._getter = (operator.itemgetter(*names) if len(names) > 1
                        else (lambda rec, _n=names[0]: (rec[_n],)))
        self._n_pending = 0  # deferred values (placeholders handed out since the last settle)
        self._pending_by_field: list[dict[str, int]] = [{} for _ in self.rules]  # input string -> placeholder
        self._pending_texts: list[list[str]] = [[] for _ in self.rules]  # their value strings, same order
        self._label_cache: dict[str, int] = {}
        self._label_codes = LabelCodes(self.label_rule) if self.label_rule is not None else None
        self._entry_cache: dict[str, dict[str, int]] = {}
        self._max_dictionary: dict[str, int] = {}
        self._tables: dict[str, Any] = {}  # field -> producer.valuetable.ValueTable (columnar path)
        self._executor = None  # the columnar path's second probing thread, started on first use
        self._missing_array = pa.array(sorted(schema.missing_values), type=pa.string())

    # ---- record at a time -------------------------------------------------------------------
    def _resolve(self, name: str, rule: ColumnRule, value: Any) -> tuple[int, float, str | None, str | None]:
        """(index or -1, value, value string, error) of one input value of column ``name``."""
        out = rule.outcome(value)
        if out.error or out.text is None:
            if self.rare.enabled:
                self.rare.apply_one(name, None)  # the row still counts in the window (as the columnar path)
            return -1, 0.0, None, out.error
        text = self.rare.apply_one(name, out.text) if self.rare.enabled else out.text
        d = self.cache.digest(name, text)
        sign = -1.0 if (self.schema.signed and d >> 63) else 1.0
        return d & self._imask, out.value * sign, text, None

    def _remember(self, name: str, cache: dict[str, Any], raw: str, hit: tuple[int, float, str | None, str | None]
                  ) -> None:
        """Cache one resolved input string in the record cache and, with an index, the fast cache."""
        if len(cache) >= self.cache.limit:
            cache.clear()
            self._fast_by_name[name].clear()
        cache[raw] = hit
        if hit[0] >= 0:
            self._fast_by_name[name][raw] = hit[0]

    def _fill_misses(self, idx: list[int | None], vals: tuple[Any, ...], defer: bool) -> list[int]:
        """Resolve the values the fast caches did not hold (first sightings, non-string values).

        With ``defer``, a new string's rule runs now (a bad number still rejects the record) but its
        keyed hash waits: the record gets a placeholder ``-2 - slot`` that :meth:`settle` replaces,
        so a frame's first sightings are hashed together in one numba call per field.
        """
        drop = False
        for j in [j for j, code in enumerate(idx) if code is None]:
            name, rule, cache = self._record_fields[j]
            v = vals[j]
            hit = cache.get(v) if type(v) is str else None
            if hit is None and defer and type(v) is str:
                pend = self._pending_by_field[j]
                code = pend.get(v)
                if code is None:
                    o = rule.outcome(v)
                    if o.text is None or o.error is not None:
                        hit = (-1, 0.0, None, o.error)
                        self._remember(name, cache, v, hit)
                    else:
                        code = pend[v] = -2 - self._n_pending
                        self._n_pending += 1
                        self._pending_texts[j].append(o.text)
                if code is not None:
                    idx[j] = code
                    continue
            if hit is None:
                hit = self._resolve(name, rule, v)
                if type(v) is str:
                    self._remember(name, cache, v, hit)
            if hit[3] is not None:
                raise _record_error(hit[3], name)
            idx[j] = hit[0]
            drop = drop or hit[0] < 0
        return [c for c in idx if c != -1] if drop else idx  # type: ignore[return-value]

    @property
    def pending(self) -> int:
        """Values waiting for their keyed hash (placeholders handed out by ``record(defer=True)``)."""
        return self._n_pending

    def settle(self, indices: list[int]) -> np.ndarray:
        """``indices`` as u32, after hashing every pending value and replacing its placeholders.

        The new indices go to the fast caches only: in fast mode the record cache is asked just for
        values the fast cache lacks (absent and bad ones), and only fast mode defers.
        """
        if not self._n_pending:
            return np.array(indices, dtype=np.uint32)
        table = np.empty(self._n_pending, dtype=np.int64)
        for j, pend in enumerate(self._pending_by_field):
            if not pend:
                continue
            name, _, cache = self._record_fields[j]
            codes = (self.cache.uncached(name, self._pending_texts[j]) & self.mask).astype(np.int64)
            table[-2 - np.fromiter(pend.values(), dtype=np.int64, count=len(pend))] = codes
            fast = self._fast_by_name[name]
            if len(fast) + len(pend) > self.cache.limit:
                fast.clear()
                cache.clear()
            fast.update(zip(pend, codes.tolist()))
            pend.clear()
            self._pending_texts[j].clear()
        self._n_pending = 0
        arr = np.array(indices, dtype=np.int64)
        neg = arr < 0
        arr[neg] = table[-2 - arr[neg]]
        return arr.astype(np.uint32)

    def record(self, record: Mapping[str, Any], with_label: bool = True, defer: bool = False
               ) -> tuple[int, list[int], list[float]]:
        """(label or -1, indices, values) of one record; raises :class:`RecordError` for a bad one.

        ``values`` may be empty when the schema needs none (unsigned, no raw numbers). With
        ``defer`` the indices may hold placeholders (< 0) until :meth:`settle`.

        Resolved values are cached per (field, input string), so a repeated value costs one dict
        lookup; the cache is emptied when it grows past its bound. Rare-value suppression (which
        depends on the stream, not the value) turns the caches off.
        """
        label = -1
        label_error = False
        if with_label and self.label_rule is not None:
            lv = record.get(self._label_col)
            label = self._label_cache.get(lv, -1) if type(lv) is str else -1
            if label < 0:
                label = self.label_rule.label(lv)
                if label < 0:
                    if not self.rare.enabled:
                        raise _record_error("bad_label", self._label_col)
                    label_error = True  # the values still enter the rare windows, as in a column batch
                if type(lv) is str and len(self._label_cache) < 1024 and label >= 0:
                    self._label_cache[lv] = label
        if self._fast_ok:
            try:
                vals = self._getter(record)
                idx = list(map(dict.get, self._fast_caches, vals))
            except (KeyError, TypeError):  # a field absent from the record, or an unhashable value
                idx = None
            if idx is not None:
                if None in idx:
                    idx = self._fill_misses(idx, vals, defer)
                return label, idx, []
        indices: list[int] = []
        values: list[float] = []
        texts: dict[str, str | None] = {}
        crosses = bool(self.cross_fields)
        rare = self.rare.enabled
        error: RecordError | None = _record_error("bad_label", self._label_col) if label_error else None
        get = record.get
        for name, rule, cache in self._record_fields:
            v = get(name)
            hit = cache.get(v) if type(v) is str and not rare else None
            if hit is None:
                hit = self._resolve(name, rule, v)
                if type(v) is str and not rare:
                    self._remember(name, cache, v, hit)
            if hit[0] >= 0:
                indices.append(hit[0])
                values.append(hit[1])
            elif hit[3] is not None:
                error = error or _record_error(hit[3], name)
                if not rare:
                    raise error
            if crosses:
                texts[name] = hit[2]
        if error is not None:
            raise error
        for (a, b), field in zip(self.schema.crosses, self.cross_fields):
            ta, tb = texts[a], texts[b]
            if ta is not None and tb is not None:
                d = self.cache.digest(field, ta + CROSS_VALUE_JOIN + tb)
                indices.append(d & self._imask)
                values.append(-1.0 if (self.schema.signed and d >> 63) else 1.0)
        return label, indices, values

    def records(self, records: list[Mapping[str, Any]], with_label: bool = True) -> EncodedBatch:
        """Encode a list of records through the record path into one CSR batch."""
        offsets = [0]
        indices: list[int] = []
        values: list[float] = []
        labels: list[int] = []
        kept: list[int] = []
        bad: list[tuple[int, str, str]] = []
        for pos, rec in enumerate(records):
            try:
                label, idx, vals = self.record(rec, with_label, defer=True)
            except RecordError as exc:
                bad.append((pos, getattr(exc, "column", ""), exc.reason))
                continue
            indices += idx
            values += vals
            labels.append(label)
            kept.append(pos)
            offsets.append(len(indices))
        return EncodedBatch(
            np.array(offsets, dtype=np.uint32), self.settle(indices),
            np.array(values, dtype=np.float32) if self.needs_values else None,
            np.array(labels, dtype=np.uint8) if with_label and self.label_rule is not None else None,
            np.array(kept, dtype=np.int64), bad)

    def distinct(self) -> dict[str, int]:
        """Distinct values seen per field (an estimate: caches are bounded and emptied when full)."""
        out = dict(self._max_dictionary)
        for cache in (self.cache.distinct(), {f: len(c) for f, c in self._entry_cache.items()},
                      {f: len(t) for f, t in self._tables.items()},
                      {f: len(c) for f, c in self._fast_by_name.items()}):
            for f, n in cache.items():
                out[f] = max(out.get(f, 0), n)
        return out


INSECURE_WARNING = ("INSECURE MODE: mmh3 with a public seed. Anyone who sees these frames can invert "
                    "the indices with a dictionary attack; use it only for benchmarks and public data.")


def make_hasher(schema: Schema, key: bytes | None) -> Hasher:
    """The schema's hasher: keyed BLAKE2b with ``key``, or the public mmh3 mode (no key)."""
    from shared.hashspec import Algorithm

    if schema.algorithm is Algorithm.MMH3_PUBLIC:
        return Hasher(schema, FeatureHasher.public_mmh3(schema.bits, schema.signed, schema.seed))
    if key is None:
        raise ConfigError("keyed hashing needs the key file (--key)")
    return Hasher(schema, FeatureHasher.keyed(key, schema.bits, schema.signed), key=key)
