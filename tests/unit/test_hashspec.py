"""Hash spec v1 against its golden vectors (tests/vectors/hash_v1.json) and its refusal rules.

The vectors were derived by tests/vectors/make_vectors.py with a pure-Python BLAKE2b and
MurmurHash3 independent of hashlib and mmh3 (see docs/hash-spec.md), so they pin the spec rather
than echo the code.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.hashspec import (
    MAX_BITS,
    MIN_KEY_BYTES,
    SPEC_VERSION,
    Algorithm,
    FeatureHasher,
    SpecId,
    feature_bytes,
    key_id,
    mmh3_key_id,
)

VECTORS_DIR = Path(__file__).resolve().parents[1] / "vectors"
HASH_VECTORS = json.loads((VECTORS_DIR / "hash_v1.json").read_text(encoding="utf-8"))
KEYED = HASH_VECTORS["blake2b_keyed"]
KEY = bytes.fromhex(KEYED["key_hex"])


def _load_make_vectors():
    spec = importlib.util.spec_from_file_location("hb_make_vectors", VECTORS_DIR / "make_vectors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_vectors = _load_make_vectors()


def _keyed_cases():
    for v in KEYED["vectors"]:
        for d in v["derived"]:
            yield pytest.param(v, d, id=f"{v['field']}={v['value']!r}/{d['bits']}b/{'s' if d['signed'] else 'u'}")


def _mmh3_cases():
    for block in HASH_VECTORS["mmh3_public"]["seeds"]:
        for v in block["vectors"]:
            for d in v["derived"]:
                yield pytest.param(block["seed"], v, d,
                                   id=f"seed{block['seed']}/{v['field']}={v['value']!r}/{d['bits']}b/{d['signed']}")


# ------------------------------------------------------------------------------------- vectors
def test_vector_file_is_v1_and_names_this_key_id():
    assert HASH_VECTORS["spec_version"] == SPEC_VERSION == 1
    assert KEY == bytes(range(32))
    assert key_id(KEY).hex() == KEYED["key_id_hex"]


@pytest.mark.parametrize(("vector", "derived"), list(_keyed_cases()))
def test_keyed_golden_vectors(vector, derived):
    message = feature_bytes(vector["field"], vector["value"])
    assert message.hex() == vector["message_hex"]
    h = FeatureHasher.keyed(KEY, derived["bits"], derived["signed"])
    digest = h.digest64(message)
    assert digest == vector["digest_u64"]
    assert digest.to_bytes(8, "little").hex() == vector["digest_hex"]
    assert h.index_sign(vector["field"], vector["value"]) == (derived["index"], derived["sign"])


@pytest.mark.parametrize(("seed", "vector", "derived"), list(_mmh3_cases()))
def test_mmh3_golden_vectors(seed, vector, derived):
    h = FeatureHasher.public_mmh3(derived["bits"], derived["signed"], seed=seed)
    assert h.spec.algorithm is Algorithm.MMH3_PUBLIC
    assert h.digest64(bytes.fromhex(vector["message_hex"])) == vector["digest_u64"]
    assert h.index_sign(vector["field"], vector["value"]) == (derived["index"], derived["sign"])


def test_vectors_cover_both_signs_non_ascii_and_empty_value():
    signs = {d["sign"] for v in KEYED["vectors"] for d in v["derived"] if d["signed"]}
    assert signs == {-1, 1}
    assert any(v["value"] == "" for v in KEYED["vectors"])
    assert any(any(ord(c) > 127 for c in v["value"]) for v in KEYED["vectors"])
    assert {d["bits"] for v in KEYED["vectors"] for d in v["derived"]} == {20, 24}


def test_stored_vectors_match_a_fresh_independent_derivation():
    """make_vectors.py --check re-derives everything with its own BLAKE2b/MurmurHash3 and compares."""
    assert make_vectors.main(["--check"]) == 0


def test_pure_reference_implementations_pass_their_published_answers():
    make_vectors._check_blake2b_pure()  # RFC 7693 Appendix A and the keyed blake2b KAT
    make_vectors._check_murmur_pure()  # SMHasher verification value 0x6384BA69


@settings(max_examples=40, deadline=None)
@given(key=st.binary(min_size=16, max_size=64), field=st.text().filter(lambda f: "\x1f" not in f),
       value=st.text(), bits=st.integers(1, MAX_BITS))
def test_digest_matches_pure_blake2b_for_any_key_and_pair(key, field, value, bits):
    h = FeatureHasher.keyed(key, bits)
    message = feature_bytes(field, value)
    raw = make_vectors.blake2b_pure(message, key=key, digest_size=8, person=b"hashbridge.v1")
    assert h.digest64(message) == int.from_bytes(raw, "little")
    assert key_id(key) == make_vectors.blake2b_pure(b"hashbridge key id", key=key, digest_size=8,
                                                    person=b"hashbridge.kid")


@settings(max_examples=60, deadline=None)
@given(message=st.binary(max_size=70), seed=st.integers(0, 2**32 - 1))
def test_mmh3_digest_matches_pure_murmur3(message, seed):
    h = FeatureHasher.public_mmh3(20, seed=seed)
    assert h.digest64(message) == make_vectors.murmur3_x64_128_pure(message, seed)[0]


# ------------------------------------------------------------------------------------- message
def test_message_is_utf8_field_separator_utf8_value():
    assert feature_bytes("city", "Zürich") == b"city\x1fZ\xc3\xbcrich"
    assert feature_bytes("note", "") == b"note\x1f"
    assert feature_bytes("sep", "a\x1fb") == b"sep\x1fa\x1fb"


def test_field_name_with_separator_is_refused():
    # otherwise ("a\x1f", "b") and ("a", "\x1fb") would both be b"a\x1f\x1fb"
    with pytest.raises(ValueError):
        feature_bytes("a\x1f", "b")


def test_field_and_value_are_not_interchangeable():
    h = FeatureHasher.keyed(KEY, 24)
    assert h.index_sign("a", "b") != h.index_sign("b", "a")


# ------------------------------------------------------------------------------------- signs
@pytest.mark.parametrize("algo", ["keyed", "mmh3"])
def test_sign_is_bit_63_and_index_does_not_depend_on_signed(algo):
    make = (lambda s: FeatureHasher.keyed(KEY, 20, s)) if algo == "keyed" else (
        lambda s: FeatureHasher.public_mmh3(20, s))
    signed, unsigned = make(True), make(False)
    seen = set()
    for i in range(200):
        value = f"v{i}"
        d = signed.digest64(feature_bytes("f", value))
        i_s, s_s = signed.index_sign("f", value)
        i_u, s_u = unsigned.index_sign("f", value)
        assert i_s == i_u == d & (2**20 - 1)
        assert s_u == 1
        assert s_s == (-1 if d >> 63 else 1)
        seen.add(s_s)
    assert seen == {-1, 1}  # 200 draws of a fair bit: both signs appear


# ------------------------------------------------------------------------------------- key id
def test_key_id_is_a_keyed_blake2b_with_its_own_personalisation():
    want = hashlib.new("blake2b", b"hashbridge key id", key=KEY, digest_size=8, person=b"hashbridge.kid")
    assert key_id(KEY) == want.digest()
    assert len(key_id(KEY)) == 8
    assert key_id(KEY) != key_id(KEY[:-1] + b"\x00")  # any key change moves the id
    # the key id is not a feature digest of any message under this key
    assert key_id(KEY) != hashlib.blake2b(b"hashbridge key id", key=KEY, digest_size=8,
                                          person=b"hashbridge.v1").digest()


def test_mmh3_key_id_depends_on_the_seed_only():
    assert mmh3_key_id(0) == mmh3_key_id(0)
    assert mmh3_key_id(0) != mmh3_key_id(1)
    assert mmh3_key_id(0).hex() == HASH_VECTORS["mmh3_public"]["seeds"][0]["key_id_hex"]
    assert mmh3_key_id(0) not in {key_id(KEY)}


def test_wrong_key_for_a_key_id_is_refused():
    spec = FeatureHasher.keyed(KEY, 20).spec
    other = bytes(range(1, 33))
    with pytest.raises(ValueError, match="key id"):
        FeatureHasher(spec, key=other)
    assert FeatureHasher(spec, key=KEY).index_sign("age", "39") == FeatureHasher.keyed(KEY, 20).index_sign(
        "age", "39")


def test_keyed_mode_needs_a_key_of_16_to_64_bytes():
    with pytest.raises(ValueError):
        FeatureHasher.keyed(bytes(MIN_KEY_BYTES - 1), 20)
    with pytest.raises(ValueError):
        FeatureHasher.keyed(bytes(65), 20)
    spec = SpecId(Algorithm.BLAKE2B_KEYED, 20, False, key_id(KEY))
    with pytest.raises(ValueError):
        FeatureHasher(spec)  # no key at all
    FeatureHasher.keyed(bytes(16), 20)
    FeatureHasher.keyed(bytes(64), 20)


def test_mmh3_mode_checks_its_seed():
    spec = FeatureHasher.public_mmh3(20, seed=7).spec
    with pytest.raises(ValueError, match="seed"):
        FeatureHasher(spec, seed=8)
    with pytest.raises(ValueError):
        FeatureHasher.public_mmh3(20, seed=-1)
    with pytest.raises(ValueError):
        FeatureHasher.public_mmh3(20, seed=2**32)
    # the public mode differs from the keyed one for the same pair
    assert FeatureHasher.public_mmh3(24).index_sign("age", "39") != FeatureHasher.keyed(KEY, 24).index_sign(
        "age", "39")


def test_a_keyed_spec_is_not_an_mmh3_spec():
    keyed = FeatureHasher.keyed(KEY, 20).spec
    public = FeatureHasher.public_mmh3(20).spec
    assert keyed != public
    with pytest.raises(ValueError):
        FeatureHasher(SpecId(Algorithm.MMH3_PUBLIC, 20, False, keyed.key_id))  # key id is no mmh3 seed id


# ------------------------------------------------------------------------------------- bits
@pytest.mark.parametrize("bits", [0, -1, MAX_BITS + 1, 64])
def test_bits_out_of_range_are_refused(bits):
    with pytest.raises(ValueError):
        SpecId(Algorithm.BLAKE2B_KEYED, bits, False, key_id(KEY))


@pytest.mark.parametrize("bits", [1, 2, 20, MAX_BITS])
def test_indices_stay_below_2_to_the_bits(bits):
    h = FeatureHasher.keyed(KEY, bits)
    indices = {h.index_sign("f", str(i))[0] for i in range(300)}
    assert all(0 <= i < 2**bits for i in indices)
    if bits <= 2:
        assert indices == set(range(2**bits))  # 300 draws fill 2 or 4 buckets


def test_spec_id_rules():
    kid = key_id(KEY)
    with pytest.raises(ValueError):
        SpecId(Algorithm.BLAKE2B_KEYED, 20, False, kid[:7])
    spec = SpecId(1, 20, True, kid)  # a plain int from a file becomes the enum
    assert spec.algorithm is Algorithm.BLAKE2B_KEYED
    assert spec == SpecId(Algorithm.BLAKE2B_KEYED, 20, True, kid)
    assert str(spec) == f"v1/blake2b_keyed/20b/signed/{kid.hex()}"
    with pytest.raises(ValueError):
        SpecId(9, 20, True, kid)
    with pytest.raises(ValueError):
        FeatureHasher(SpecId(Algorithm.BLAKE2B_KEYED, 20, False, kid, version=2), key=KEY)
