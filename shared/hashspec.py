"""Hash spec v1: how a (field, value) pair becomes a feature index, and how key spaces are told apart.

The spec is written up in ``docs/hash-spec.md`` with golden vectors; this module is its reference
implementation. Only the data owner ever holds the secret key. Trainer and scorer see the
:class:`SpecId` alone, which names the key space through a one-way fingerprint (the key id).
"""
from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from enum import IntEnum

import mmh3

SPEC_VERSION = 1
SEPARATOR = b"\x1f"  # ASCII unit separator between field name and value
PERSON = b"hashbridge.v1"  # BLAKE2b personalisation of feature digests (<= 16 bytes)
KEY_ID_PERSON = b"hashbridge.kid"  # BLAKE2b personalisation of the key fingerprint
KEY_ID_MESSAGE = b"hashbridge key id"
MIN_KEY_BYTES = 16
MAX_BITS = 31
MAX_KEY_BYTES = 64  # BLAKE2b's limit
DEFAULT_MMH3_SEED = 0  # public by definition: the insecure mode has no secret
MAX_MMH3_SEED = 2**32 - 1  # MurmurHash3 takes a 32-bit seed


class Algorithm(IntEnum):
    """Hash algorithms; the numeric value travels in every frame and model."""

    BLAKE2B_KEYED = 1
    MMH3_PUBLIC = 2  # insecure: a dictionary attack inverts it (the original article's mode)


@dataclass(frozen=True, slots=True)
class SpecId:
    """Everything a learner needs to know to accept a frame: never the key itself."""

    algorithm: Algorithm
    bits: int
    signed: bool
    key_id: bytes  # 8 bytes
    version: int = SPEC_VERSION

    def __post_init__(self) -> None:
        # a plain int (e.g. read from a file) becomes the enum, so ``is`` tests and ``str`` work
        object.__setattr__(self, "algorithm", Algorithm(self.algorithm))
        if not 1 <= self.bits <= MAX_BITS:
            raise ValueError(f"bits must be in 1..{MAX_BITS}, got {self.bits}")
        if len(self.key_id) != 8:
            raise ValueError("key_id must be 8 bytes")

    @property
    def key_id_hex(self) -> str:
        return self.key_id.hex()

    def __str__(self) -> str:
        sign = "signed" if self.signed else "unsigned"
        return f"v{self.version}/{self.algorithm.name.lower()}/{self.bits}b/{sign}/{self.key_id_hex}"


def key_id(key: bytes) -> bytes:
    """The key's public fingerprint: a second keyed digest, so it reveals nothing about the key."""
    return hashlib.blake2b(KEY_ID_MESSAGE, key=key, digest_size=8, person=KEY_ID_PERSON).digest()


def mmh3_key_id(seed: int) -> bytes:
    """The fingerprint of the public mmh3 mode: derived from the seed, which is no secret."""
    return hashlib.blake2b(b"mmh3 seed %d" % seed, digest_size=8, person=KEY_ID_PERSON).digest()


def feature_bytes(field: str, value: str) -> bytes:
    """The hashed message of a pair: UTF-8 field name, the separator byte, UTF-8 value.

    A field name must not contain the separator, or ("a\x1f", "b") and ("a", "\x1fb") would be
    the same message; values may contain it, since the first separator ends the field name.
    """
    if "\x1f" in field:
        raise ValueError("a field name must not contain the separator U+001F")
    return field.encode("utf-8") + SEPARATOR + value.encode("utf-8")


class FeatureHasher:
    """Turns (field, value) pairs into 64-bit digests, then into an index and a sign.

    ``digest64`` is the only algorithm-specific part; everything derived from the digest
    (index = low ``bits`` bits, sign = bit 63) is shared by both algorithms.
    """

    def __init__(self, spec: SpecId, key: bytes | None = None, seed: int = DEFAULT_MMH3_SEED) -> None:
        self.spec = spec
        self.mask = (1 << spec.bits) - 1
        if spec.version != SPEC_VERSION:
            raise ValueError(f"hash spec version {spec.version} is not supported (this is v{SPEC_VERSION})")
        if spec.algorithm is Algorithm.BLAKE2B_KEYED:
            if key is None or not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
                raise ValueError(f"keyed BLAKE2b needs a key of {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes")
            if key_id(key) != spec.key_id:
                raise ValueError("key does not match the spec's key id")
            self._key = key
        else:
            if not 0 <= seed <= MAX_MMH3_SEED:
                raise ValueError(f"mmh3 seed must be in 0..{MAX_MMH3_SEED}, got {seed}")
            if mmh3_key_id(seed) != spec.key_id:
                raise ValueError("seed does not match the spec's key id")
            self._seed = seed

    @classmethod
    def keyed(cls, key: bytes, bits: int, signed: bool = False) -> "FeatureHasher":
        return cls(SpecId(Algorithm.BLAKE2B_KEYED, bits, signed, key_id(key)), key=key)

    @classmethod
    def public_mmh3(cls, bits: int, signed: bool = False, seed: int = DEFAULT_MMH3_SEED) -> "FeatureHasher":
        return cls(SpecId(Algorithm.MMH3_PUBLIC, bits, signed, mmh3_key_id(seed)), seed=seed)

    def digest64(self, message: bytes) -> int:
        if self.spec.algorithm is Algorithm.BLAKE2B_KEYED:
            raw = hashlib.blake2b(message, key=self._key, digest_size=8, person=PERSON).digest()
            return struct.unpack("<Q", raw)[0]
        return mmh3.hash64(message, self._seed, signed=False)[0]

    def index_sign(self, field: str, value: str) -> tuple[int, int]:
        """Index in ``[0, 2**bits)`` and sign (+1, or -1 when signed and bit 63 is set)."""
        d = self.digest64(feature_bytes(field, value))
        sign = -1 if (self.spec.signed and d >> 63) else 1
        return d & self.mask, sign
