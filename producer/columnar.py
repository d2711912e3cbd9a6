"""The columnar half of :class:`producer.hashing.Hasher`: a column batch to CSR rows in numpy.

Common case (a categorical column of plain strings, keyed BLAKE2b, no values, crosses or rare
suppression): each column is probed in its field's :class:`producer.valuetable.ValueTable`, which
writes indices straight into the row-major ``[n, fields]`` array; the columns are dealt over two
threads. Otherwise (numeric rules, values, crosses, rare suppression, nulls, mmh3) a column batch is
dictionary-encoded once, each distinct value resolved once, and rows become ``table[codes]``. The
mixin uses the hasher's ``schema``, ``rules``, ``cache``, ``mask``, ``rare`` and per-field caches.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shared.errors import RecordError

from producer import utf8
from producer.csvplain import RawBatch
from producer.labelcodes import LabelCodes
from producer.rare import RARE_TOKEN, RareSuppressor
from producer.rules import KERNEL_MIN_VALUES, WHITESPACE, ColumnRule, DigestCache, LabelRule, Outcome
from producer.schema import CROSS_VALUE_JOIN, Schema
from producer.valuetable import ABSENT, ValueTable

PARALLEL_MIN_ROWS = 8192  # a column batch this long is probed on two threads
VECTOR_MIN_ENTRIES = 2048  # a categorical dictionary this large is hashed whole by the numba kernel
_MISS, _CODE_ABSENT, _CODE_BAD = -3, -1, -2  # fast-path entry codes besides indices >= 0


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


def _lookup_all(probes: list[tuple[ValueTable, pa.Array | tuple, int]], idx: np.ndarray, present: np.ndarray) -> None:
    for table, column, j in probes:
        table.lookup(column, idx[:, j], present[:, j])


def _blank_invalid_utf8(batch: pa.RecordBatch) -> tuple[pa.RecordBatch, list[tuple[np.ndarray, str]]]:
    """The rows of each column whose value is not UTF-8, and the batch with those values blanked."""
    found, cols = [], batch.columns
    for i, col in enumerate(cols):
        rows = utf8.invalid_rows(col)
        if rows is not None:
            found.append((rows, batch.schema.names[i]))
            cols[i] = utf8.blank_rows(col, rows)
    return (pa.RecordBatch.from_arrays(cols, schema=batch.schema) if found else batch), found


def _arrow_text_matches(t: pa.DataType) -> bool:
    """True if Arrow's cast to string writes every value of type ``t`` as ``rules.as_text`` does, so
    the vectorised hashing gives the record path's indices. Floats do not qualify (Arrow writes
    1.0 as "1" and NaN as "nan"; Python "1.0" and missing), nor do dates, decimals or binary."""
    return (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t)
            or pa.types.is_boolean(t))


class ColumnarPath:
    """``Hasher.batch`` and its helpers (a mixin: :class:`producer.hashing.Hasher` owns the state)."""

    schema: Schema
    rules: dict[str, ColumnRule]
    cache: DigestCache
    rare: RareSuppressor
    label_rule: LabelRule | None
    cross_fields: list[str]
    needs_values: bool
    mask: np.uint64
    _imask: int
    _entry_cache: dict[str, dict[str, int]]
    _max_dictionary: dict[str, int]
    _tables: dict[str, ValueTable]
    _executor: ThreadPoolExecutor | None
    _missing_array: pa.Array
    _label_codes: LabelCodes

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
        vector = not rule.numeric and _arrow_text_matches(arr.dictionary.type) and self.cache.kernel() is not None
        if vector and n_entries >= VECTOR_MIN_ENTRIES:
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
                if vector and len(new) >= KERNEL_MIN_VALUES:
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

    def _table(self, name: str, arr: pa.Array) -> ValueTable | None:
        """The field's value table, when this column can be probed in it: a categorical column of
        plain strings without nulls (every CSV column), under a keyed BLAKE2b key."""
        rule = self.rules[name]
        if rule.numeric or arr.null_count or not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
            return None
        return self._value_table(name)

    def _raw_ok(self, raw: RawBatch) -> bool:
        """A raw CSV block can be hashed where it lies: every column goes to a value table (no
        numbers, values, crosses or rare suppression; a keyed key) and every byte is ASCII."""
        return (not self.needs_values and not self.cross_fields and not self.rare.enabled
                and not any(rule.numeric for rule in self.rules.values()) and self.cache.kernel() is not None
                and raw.ascii())

    def _value_table(self, name: str) -> ValueTable | None:
        rule = self.rules[name]
        table = self._tables.get(name)
        if table is None:
            kernel = self.cache.kernel()
            if kernel is None:
                return None
            miss = rule.outcome(None)
            code = ABSENT if miss.text is None else self.cache.digest(name, miss.text) & self._imask
            missing = {m.encode("utf-8"): code for m in rule.missing_values}
            table = self._tables[name] = ValueTable(kernel, name, self.schema.bits, self.cache.limit, missing)
        return table

    def _probe_tables(self, probes: list[tuple[ValueTable, pa.Array | tuple, int]], idx: np.ndarray,
                      present: np.ndarray) -> None:
        """Probe each column in its table, the columns dealt over two threads (largest tables first,
        alternately): each table is touched by one thread only, and the kernel releases the GIL."""
        if len(probes) < 2 or idx.shape[0] < PARALLEL_MIN_ROWS or (os.cpu_count() or 1) < 2:
            _lookup_all(probes, idx, present)
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hash-probe")
        probes = sorted(probes, key=lambda p: p[0].size, reverse=True)
        other = self._executor.submit(_lookup_all, probes[1::2], idx, present)
        _lookup_all(probes[0::2], idx, present)
        other.result()

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

    def batch(self, batch: pa.RecordBatch | RawBatch, with_label: bool = True) -> EncodedBatch:
        """Encode a column batch; rows with a bad number or label are left out and listed. A raw
        CSV block is probed where it lies when it can be (:meth:`_raw_ok`), else made Arrow."""
        raw = batch if isinstance(batch, RawBatch) else None
        if raw is not None and not self._raw_ok(raw):
            batch, raw = raw.to_arrow(), None
        if raw is None:
            batch, not_utf8 = _blank_invalid_utf8(batch)
            names = batch.schema.names
        else:
            not_utf8, names = [], list(raw.columns)
        n = batch.num_rows
        k = len(self.rules) + len(self.cross_fields)
        idx = np.empty((n, k), dtype=np.uint32)
        val = np.ones((n, k), dtype=np.float32) if self.needs_values else None
        present = np.ones((n, k), dtype=bool)
        bad = np.zeros(n, dtype=bool)
        reasons: list[tuple[np.ndarray, str, str]] = [(rows, col, utf8.REASON) for rows, col in not_utf8]
        for rows, _ in not_utf8:
            bad |= rows
        labels = None
        if with_label and self.label_rule is not None:
            col = self.schema.label.column  # type: ignore[union-attr]
            if col not in names:
                raise RecordError(f"input has no label column {col}", "missing_column")
            lab = self._label_codes.labels(raw.raw(col) if raw is not None else batch.column(names.index(col)))
            if lab is None:
                column = raw.column(col) if raw is not None else batch.column(names.index(col))
                codes, entries = self._entries(col, column)
                lab = np.array([self.label_rule.label(e) for e in entries], dtype=np.int8)[codes]
            lbad = lab < 0
            if lbad.any():
                reasons.append((lbad, col, "bad_label"))
                bad |= lbad
            labels = lab.astype(np.uint8)
        kept_texts: dict[str, tuple[np.ndarray, list[Outcome]]] = {}
        crossed = {f for pair in self.schema.crosses for f in pair}
        probes: list[tuple[ValueTable, pa.Array | tuple, int]] = []
        for j, name in enumerate(self.rules):
            if name not in names:
                raise RecordError(f"input has no column {name}", "missing_column")
            if raw is not None:  # _raw_ok: every column has a value table
                probes.append((self._value_table(name), raw.raw(name), j))  # type: ignore[arg-type]
                continue
            column = batch.column(names.index(name))
            if not self.needs_values and name not in crossed and not self.rare.enabled:
                table = self._table(name, column)
                if table is not None:
                    probes.append((table, column, j))
                    continue
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
        self._probe_tables(probes, idx, present)
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
