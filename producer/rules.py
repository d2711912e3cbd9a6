"""Value-string rules: what one input value becomes before it is hashed (see ``docs/schema.md``).

Both hashing paths call these rules, so they agree on every value; ``DigestCache`` keeps the keyed
digest of each (field, value string) so repeated values cost a dict lookup.
"""
from __future__ import annotations

import bisect
import hashlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from shared.errors import ConfigError
from shared.hashspec import PERSON, Algorithm, FeatureHasher, feature_bytes

from producer.schema import BIN_PREFIX, Schema

WHITESPACE = " \t\n\r\x0b\x0c"  # stripped from both ends of every input string (ASCII only)
CACHE_LIMIT = 1 << 20  # digests kept per field; the cache is emptied when it grows past this
KERNEL_MIN_VALUES = 64  # this many new values of a field are hashed in one numba call, fewer in Python


def as_text(value: Any) -> str | None:
    """The text of an input value: strings stripped, JSON scalars written as JSON would."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip(WHITESPACE)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one input value becomes: a value string (None: no feature) and the feature's value."""

    text: str | None
    value: float = 1.0
    error: str | None = None  # a RecordError reason: the record is skipped


class ColumnRule:
    """The value-string rule of one feature column (see ``docs/schema.md``)."""

    def __init__(self, schema: Schema, name: str) -> None:
        self.name = name
        self.missing_values = schema.missing_values
        self.missing = Outcome(schema.missing_token)
        self.edges: list[float] = []
        self.raw = False
        self.numeric = False
        for col in schema.numeric:
            if col.name == name:
                self.numeric, self.raw = True, col.raw
                if not col.raw:
                    if col.edges is None:
                        raise ConfigError(f"numeric column {name} has no edges yet: run 'hashbridge schema fit'")
                    self.edges = [float(e) for e in col.edges]

    def outcome(self, value: Any) -> Outcome:
        text = as_text(value)
        if text is None or text in self.missing_values:
            return self.missing
        if not self.numeric:
            return Outcome(text)
        try:
            x = float(text)
        except ValueError:
            return Outcome(None, error="bad_number")
        if math.isnan(x):
            return self.missing
        if self.raw:
            return Outcome("", x)
        return Outcome(BIN_PREFIX + str(bisect.bisect_right(self.edges, x)))


class LabelRule:
    def __init__(self, schema: Schema) -> None:
        assert schema.label is not None
        self.positive, self.negative = schema.label.positive, schema.label.negative
        self.missing_values = schema.missing_values

    def label(self, value: Any) -> int:
        """0 or 1; -1 for a missing or unknown label (a bad record)."""
        text = as_text(value)
        if text is None:
            return -1
        if text in self.positive:
            return 1
        if self.negative is None:
            return -1 if text in self.missing_values else 0
        return 0 if text in self.negative else -1

class DigestCache:
    """Per-field digests of value strings, so a repeated value costs a dict lookup."""

    def __init__(self, hasher: FeatureHasher, limit: int = CACHE_LIMIT, key: bytes | None = None) -> None:
        self.hasher, self.limit = hasher, limit
        self.fields: dict[str, dict[str, int]] = {}
        self.hashed = 0  # keyed digests computed (cache misses)
        self._digest64 = hasher.digest64
        self._key = key if hasher.spec.algorithm is Algorithm.BLAKE2B_KEYED else None
        self._kernel: Any = None  # producer.blake2.KeyedBlake2, loaded on first use (numba import)
        if key is not None and hasher.spec.algorithm is Algorithm.BLAKE2B_KEYED:
            # the same digest as FeatureHasher.digest64, from a copy of the keyed state: the key
            # block is compressed once instead of on every call (about 3x faster per value)
            base = hashlib.blake2b(key=key, digest_size=8, person=PERSON)

            def digest64(message: bytes, _copy: Any = base.copy, _from: Any = int.from_bytes) -> int:
                h = _copy()
                h.update(message)
                return _from(h.digest(), "little")
            self._digest64 = digest64

    def digest(self, field: str, text: str) -> int:
        cache = self.fields.get(field)
        if cache is None:
            cache = self.fields[field] = {}
        d = cache.get(text)
        if d is None:
            if len(cache) >= self.limit:
                cache.clear()
            d = cache[text] = self._digest64(feature_bytes(field, text))
            self.hashed += 1
        return d

    def digests(self, field: str, texts: list[str]) -> np.ndarray:
        cache = self.fields.get(field)
        if cache is None or len(cache) + len(texts) > self.limit:
            if cache is not None:
                cache.clear()
            cache = self.fields[field] = {}
        get, out = cache.get, []
        for t in texts:
            d = get(t)
            if d is None:
                d = cache[t] = self._digest64(feature_bytes(field, t))
                self.hashed += 1
            out.append(d)
        return np.array(out, dtype=np.uint64)

    def kernel(self) -> Any:
        """The numba keyed BLAKE2b of this key (None in mmh3 mode); numba loads on first call."""
        if self._kernel is None and self._key is not None:
            from producer.blake2 import KeyedBlake2

            self._kernel = KeyedBlake2(self._key)
        return self._kernel

    def uncached(self, field: str, texts: list[str]) -> np.ndarray:
        """Digests of new value strings, not kept in the cache (the caller keeps the indices):
        many at once go through one numba call, a few through Python."""
        self.hashed += len(texts)
        if len(texts) >= KERNEL_MIN_VALUES and self.kernel() is not None:
            import pyarrow as pa

            return self.kernel().digest_strings(field.encode("utf-8"), pa.array(texts, type=pa.string()))
        d64 = self._digest64
        return np.fromiter((d64(feature_bytes(field, t)) for t in texts), dtype=np.uint64, count=len(texts))

    def distinct(self) -> dict[str, int]:
        """Distinct values seen per field since the cache was last emptied (an estimate)."""
        return {f: len(c) for f, c in self.fields.items()}
