"""Records to feature indices: a columnar path for files and a record-at-a-time path for the API.

Both paths turn each input value into the same value string (:class:`ColumnRule`) and hash
``(field, value string)`` with :class:`shared.hashspec.FeatureHasher`, through one bounded digest
cache per field, so they give identical indices for the same record. The columnar path hashes
each distinct value of a column batch once and maps the batch's dictionary codes to indices with
numpy, which keeps the keyed hash off the per-row budget.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from itertools import repeat
from typing import Any, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shared.errors import ConfigError, RecordError
from shared.hashspec import FeatureHasher

from producer.rules import CACHE_LIMIT, KERNEL_MIN_VALUES, WHITESPACE, ColumnRule, DigestCache, LabelRule, Outcome, as_text
from producer.rare import RARE_TOKEN, RareSuppressor
from producer.schema import CROSS_FIELD_JOIN, CROSS_VALUE_JOIN, Schema

__all__ = ["CACHE_LIMIT", "WHITESPACE", "ColumnRule", "DigestCache", "EncodedBatch", "Hasher", "LabelRule",
           "Outcome", "as_text", "make_hasher"]

VECTOR_MIN_ENTRIES = 2048  # a categorical dictionary this large is hashed whole by the numba kernel
_MISS, _CODE_ABSENT, _CODE_BAD = -3, -1, -2  # fast-path entry codes besides indices >= 0


def _record_error(reason: str, column: str) -> RecordError:
    err = RecordError(f"{reason} in column {column}", reason)
    err.column = column  # type: ignore[attr-defined]
    return err


@dataclass(frozen=True, slots=True, eq=False)
class EncodedBatch:
    """CSR rows ready for a frame, plus the rows that were skipped and why."""

    offsets: np.ndarray  # u32[n+1]
    indices: np.ndarray  # u32[nnz]
    values: np.ndarray | None  # f32[nnz] when the schema needs values
    labels: np.ndarray | None  # u8[n]
    kept: np.ndarray  # positions (in the input batch) of the encoded rows
    bad: list[tuple[int, str, str]]  # (position in the input batch, column, reason)

    @property
    def n(self) -> int:
        return int(self.offsets.shape[0] - 1)

    def rows(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Offsets (rebased to 0), indices and values of rows [start, stop)."""
        a, b = int(self.offsets[start]), int(self.offsets[stop])
        vals = self.values[a:b] if self.values is not None else None
        return self.offsets[start:stop + 1] - np.uint32(a), self.indices[a:b], vals


class Hasher:
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
        # fast record path: one C-level map over per-field caches of input string -> index, taken
        # when every value is a cached string (no values array, no crosses needed)
        self.rare = RareSuppressor(schema.rare_k, schema.rare_window)
        self._fast_ok = (bool(self.rules) and not self.needs_values and not self.cross_fields
                         and not self.rare.enabled)
        self._fast_by_name: dict[str, dict[str, int]] = {name: {} for name in self.rules}
        self._fast_caches = [self._fast_by_name[name] for name in self.rules]
        names = list(self.rules)
        self._getter = (operator.itemgetter(*names) if len(names) > 1
                        else (lambda rec, _n=names[0]: (rec[_n],)))
        self._pending: list[tuple[int, str, str]] = []  # (field position, input string, value string)
        self._pending_by_field: list[dict[str, int]] = [{} for _ in self.rules]  # input string -> placeholder
        self._label_cache: dict[str, int] = {}
        self._entry_cache: dict[str, dict[str, int]] = {}
        self._max_dictionary: dict[str, int] = {}
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
        out: list[int] = []
        for j, code in enumerate(idx):
            if code is None:
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
                            code = pend[v] = -2 - len(self._pending)
                            self._pending.append((j, v, o.text))
                    if code is not None:
                        out.append(code)
                        continue
                if hit is None:
                    hit = self._resolve(name, rule, v)
                    if type(v) is str:
                        self._remember(name, cache, v, hit)
                if hit[3] is not None:
                    raise _record_error(hit[3], name)
                if hit[0] < 0:
                    continue
                code = hit[0]
            out.append(code)
        return out

    @property
    def pending(self) -> int:
        """Values waiting for their keyed hash (placeholders handed out by ``record(defer=True)``)."""
        return len(self._pending)

    def settle(self, indices: list[int]) -> np.ndarray:
        """``indices`` as u32, after hashing every pending value and replacing its placeholders."""
        if not self._pending:
            return np.array(indices, dtype=np.uint32)
        table = np.empty(len(self._pending), dtype=np.int64)
        by_field: dict[int, list[int]] = {}
        for slot, (j, _, _) in enumerate(self._pending):
            by_field.setdefault(j, []).append(slot)
        for j, slots in by_field.items():
            name, _, cache = self._record_fields[j]
            items = [self._pending[s] for s in slots]
            codes = (self.cache.uncached(name, [t for _, _, t in items]) & self.mask).astype(np.int64)
            table[slots] = codes
            for (_, raw, text), code in zip(items, codes.tolist()):
                self._remember(name, cache, raw, (code, 1.0, text, None))
        for pend in self._pending_by_field:
            pend.clear()
        self._pending.clear()
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

    # ---- columnar ---------------------------------------------------------------------------
    def _entries(self, name: str, arr: pa.Array) -> tuple[np.ndarray, list[Outcome]]:
        """Dictionary codes of a column (nulls -> the last entry) and one outcome per entry."""
        if not pa.types.is_dictionary(arr.type):
            arr = pc.dictionary_encode(arr)
        entries = arr.dictionary.to_pylist()
        entries.append(None)
        idx = arr.indices
        if idx.null_count:
            idx = pc.fill_null(idx, len(entries) - 1)
        codes = idx.to_numpy(zero_copy_only=False)
        rule = self.rules.get(name)
        outcomes = [rule.outcome(e) for e in entries] if rule is not None else entries
        return codes, outcomes

    def distinct(self) -> dict[str, int]:
        """Distinct values seen per field (an estimate: caches are bounded and emptied when full)."""
        out = dict(self._max_dictionary)
        for cache in (self.cache.distinct(), {f: len(c) for f, c in self._entry_cache.items()},
                      {f: len(c) for f, c in self._fast_by_name.items()}):
            for f, n in cache.items():
                out[f] = max(out.get(f, 0), n)
        return out

    def _kernel_entries(self, name: str, rule: ColumnRule, values: pa.Array) -> np.ndarray:
        """Entry codes of dictionary values of a categorical column, trimmed in Arrow and hashed in
        one numba call (no Python object per value)."""
        trimmed = pc.utf8_trim(values.cast(pa.string()), characters=WHITESPACE)
        if trimmed.null_count:
            trimmed = pc.fill_null(trimmed, "")
        codes = (self.cache.kernel().digest_strings(name.encode("utf-8"), trimmed) & self.mask).astype(np.int64)
        self.cache.hashed += len(values)
        missing = pc.is_in(trimmed, value_set=self._missing_array).to_numpy(zero_copy_only=False)
        if missing.any():
            miss = rule.outcome(None)
            codes[missing] = _CODE_ABSENT if miss.text is None else self.cache.digest(name, miss.text) & self._imask
        return codes

    def _fast_entries(self, name: str, arr: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Codes and per-entry (index, present, bad) of one column batch.

        A large dictionary of a categorical column is hashed whole by the numba kernel: measured on
        20 Zipf fields, that costs less than a cross-batch Python dict lookup of every entry (a
        fresh ``str`` per entry, a probe into a million-entry dict). Smaller dictionaries go
        through a per-field cache of raw string -> index that persists across batches, so only
        never-seen values are resolved (many at once in one numba call).
        """
        if not pa.types.is_dictionary(arr.type):
            arr = pc.dictionary_encode(arr)
        rule = self.rules[name]
        n_entries = len(arr.dictionary)
        if not rule.numeric and n_entries >= VECTOR_MIN_ENTRIES and self.cache.kernel() is not None:
            self._max_dictionary[name] = max(self._max_dictionary.get(name, 0), n_entries)
            resolved = self._kernel_entries(name, rule, arr.dictionary)
        else:
            entries = arr.dictionary.to_pylist()
            cache = self._entry_cache.setdefault(name, {})
            if len(cache) + n_entries > self.cache.limit:
                cache.clear()
            resolved = np.fromiter(map(cache.get, entries, repeat(_MISS)), dtype=np.int64, count=n_entries)
            new = np.flatnonzero(resolved == _MISS)
            if len(new):
                if not rule.numeric and len(new) >= KERNEL_MIN_VALUES and self.cache.kernel() is not None:
                    codes = self._kernel_entries(name, rule, arr.dictionary.take(pa.array(new)))
                else:
                    codes = np.array([self._entry_code(name, rule, entries[e]) for e in new.tolist()], np.int64)
                resolved[new] = codes
                cache.update(zip(map(entries.__getitem__, new.tolist()), codes.tolist()))
        null = rule.outcome(None)
        null_code = _CODE_ABSENT if null.text is None else int(self.cache.digest(name, null.text) & self._imask)
        resolved = np.append(resolved, null_code)
        idx = arr.indices
        if idx.null_count:
            idx = pc.fill_null(idx, n_entries)
        codes = idx.to_numpy(zero_copy_only=False)
        return codes, np.maximum(resolved, 0).astype(np.uint32), resolved >= 0, resolved == _CODE_BAD

    def _entry_code(self, name: str, rule: ColumnRule, raw: Any) -> int:
        out = rule.outcome(raw)
        if out.error is not None:
            return _CODE_BAD
        return _CODE_ABSENT if out.text is None else self.cache.digest(name, out.text) & self._imask

    def _entry_arrays(self, field: str, outcomes: list[Outcome]
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per dictionary entry: index, value (sign applied), present, bad."""
        present = np.array([o.text is not None for o in outcomes], dtype=bool)
        bad = np.array([o.error is not None for o in outcomes], dtype=bool)
        texts = [o.text for o in outcomes if o.text is not None]
        dig = np.zeros(len(outcomes), dtype=np.uint64)
        if texts:
            dig[present] = self.cache.digests(field, texts)
        index = (dig & self.mask).astype(np.uint32)
        value = np.ones(len(outcomes), dtype=np.float32)
        if self.needs_values:
            value = np.array([o.value for o in outcomes], dtype=np.float32)
            if self.schema.signed:
                value[(dig >> np.uint64(63)).astype(bool)] *= -1.0
        return index, value, present, bad

    def _suppress(self, name: str, codes: np.ndarray, outcomes: list[Outcome]
                  ) -> tuple[np.ndarray, list[Outcome]]:
        """Rows whose value string is rare in the window point at one extra ``__rare__`` entry."""
        texts = [o.text if o.error is None else None for o in outcomes]
        keep = self.rare.keep_dictionary(name, codes, texts)
        if keep.all():
            return codes, outcomes
        return np.where(keep, codes, len(outcomes)), outcomes + [Outcome(RARE_TOKEN)]

    def batch(self, batch: pa.RecordBatch, with_label: bool = True) -> EncodedBatch:
        """Encode a column batch; rows with a bad number or label are left out and listed."""
        n = batch.num_rows
        k = len(self.rules) + len(self.cross_fields)
        idx = np.empty((n, k), dtype=np.uint32)
        val = np.ones((n, k), dtype=np.float32) if self.needs_values else None
        present = np.ones((n, k), dtype=bool)
        bad = np.zeros(n, dtype=bool)
        reasons: list[tuple[np.ndarray, str, str]] = []
        labels = None
        names = batch.schema.names
        if with_label and self.label_rule is not None:
            col = self.schema.label.column  # type: ignore[union-attr]
            if col not in names:
                raise RecordError(f"input has no label column {col}", "missing_column")
            codes, entries = self._entries(col, batch.column(names.index(col)))
            lab = np.array([self.label_rule.label(e) for e in entries], dtype=np.int8)[codes]
            lbad = lab < 0
            if lbad.any():
                reasons.append((lbad, col, "bad_label"))
                bad |= lbad
            labels = lab.astype(np.uint8)
        kept_texts: dict[str, tuple[np.ndarray, list[Outcome]]] = {}
        crossed = {f for pair in self.schema.crosses for f in pair}
        for j, name in enumerate(self.rules):
            if name not in names:
                raise RecordError(f"input has no column {name}", "missing_column")
            column = batch.column(names.index(name))
            if not self.needs_values and name not in crossed and not self.rare.enabled:
                codes, e_idx, e_present, e_bad = self._fast_entries(name, column)
                e_val = None
            else:
                codes, outcomes = self._entries(name, column)
                if self.rare.enabled:
                    codes, outcomes = self._suppress(name, codes, outcomes)
                e_idx, e_val, e_present, e_bad = self._entry_arrays(name, outcomes)
                kept_texts[name] = (codes, outcomes)
            idx[:, j] = e_idx[codes]
            if val is not None and e_val is not None:
                val[:, j] = e_val[codes]
            if not e_present.all():
                present[:, j] = e_present[codes]
            if e_bad.any():
                rbad = e_bad[codes]
                reasons.append((rbad, name, "bad_number"))
                bad |= rbad
        for c, ((a, b), field) in enumerate(zip(self.schema.crosses, self.cross_fields)):
            j = len(self.rules) + c
            ca, oa = kept_texts[a]
            cb, ob = kept_texts[b]
            pair = ca.astype(np.int64) * len(ob) + cb
            uniq, inv = np.unique(pair, return_inverse=True)
            outs = []
            for p in uniq.tolist():
                ta, tb = oa[p // len(ob)].text, ob[p % len(ob)].text
                outs.append(Outcome(None if ta is None or tb is None else ta + CROSS_VALUE_JOIN + tb))
            e_idx, e_val, e_present, _ = self._entry_arrays(field, outs)
            idx[:, j] = e_idx[inv]
            if val is not None:
                val[:, j] = e_val[inv]
            if not e_present.all():
                present[:, j] = e_present[inv]
        kept = np.flatnonzero(~bad)
        bad_list: list[tuple[int, str, str]] = []
        if bad.any():
            seen: set[int] = set()
            for mask, col, why in reasons:
                for r in np.flatnonzero(mask).tolist():
                    if r not in seen:
                        seen.add(r)
                        bad_list.append((r, col, why))
            bad_list.sort()
            idx, present = idx[kept], present[kept]
            val = val[kept] if val is not None else None
            labels = labels[kept] if labels is not None else None
        m = kept.shape[0]
        if present.all():
            offsets = np.arange(0, (m + 1) * k, k, dtype=np.uint32)
            indices = idx.reshape(-1)
            values = val.reshape(-1) if val is not None else None
        else:
            offsets = np.zeros(m + 1, dtype=np.uint32)
            np.cumsum(present.sum(axis=1), out=offsets[1:])
            indices = idx[present]
            values = val[present] if val is not None else None
        return EncodedBatch(offsets, indices, values, labels, kept, bad_list)


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
