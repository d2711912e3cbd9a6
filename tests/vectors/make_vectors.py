"""Make the golden vectors of hash spec v1 and frame codec v1, cross-checked against independent code.

    python tests/vectors/make_vectors.py          # (re)write hash_v1.json and frames_v1.json
    python tests/vectors/make_vectors.py --check  # verify the stored files, write nothing

The vectors are not just the reference implementation's own output. Every value is computed twice:

* feature digests and key ids by ``shared.hashspec`` (which uses ``hashlib``) and by a pure-Python
  BLAKE2b written here from RFC 7693 (parameter block with key length, personalisation, counter,
  final flag); that BLAKE2b is itself checked first against RFC 7693 Appendix A ("abc", unkeyed) and
  the first keyed answer of the BLAKE2 reference known-answer tests (blake2b-kat.txt);
* mmh3 digests by the ``mmh3`` package and by a pure-Python MurmurHash3_x64_128, itself checked
  against SMHasher's verification value for that function (0x6384BA69);
* index and sign by plain integer arithmetic on the digest (low ``bits`` bits; bit 63);
* every frame by ``shared.frames.encode_*`` and by a hand-assembled ``struct`` packing of the layout
  in ``docs/wire-format.md``; both must give the same bytes, and ``decode`` must give back the inputs.

The negative frame vectors are valid frames with one field changed by hand; each names the
``FrameError.reason`` a conforming decoder reports, checked against ``shared.frames.decode``.
"""
from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # the repo root, when run as a script

M64 = (1 << 64) - 1

# --------------------------------------------------------------------------------------------
# Pure-Python BLAKE2b (RFC 7693), independent of hashlib.
# --------------------------------------------------------------------------------------------
_IV = (0x6A09E667F3BCC908, 0xBB67AE8584CAA73B, 0x3C6EF372FE94F82B, 0xA54FF53A5F1D36F1,
       0x510E527FADE682D1, 0x9B05688C2B3E6C1F, 0x1F83D9ABFB41BD6B, 0x5BE0CD19137E2179)
_SIGMA = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
    (14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3),
    (11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4),
    (7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8),
    (9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13),
    (2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9),
    (12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11),
    (13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10),
    (6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5),
    (10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0),
)


def _rotr64(x: int, n: int) -> int:
    return ((x >> n) | (x << (64 - n))) & M64


def _compress(h: list[int], block: bytes, t: int, last: bool) -> None:
    m = struct.unpack("<16Q", block)
    v = list(h) + list(_IV)
    v[12] ^= t & M64
    v[13] ^= (t >> 64) & M64
    if last:
        v[14] ^= M64
    for r in range(12):
        s = _SIGMA[r % 10]
        for i, (a, b, c, d) in enumerate(((0, 4, 8, 12), (1, 5, 9, 13), (2, 6, 10, 14), (3, 7, 11, 15),
                                          (0, 5, 10, 15), (1, 6, 11, 12), (2, 7, 8, 13), (3, 4, 9, 14))):
            x, y = m[s[2 * i]], m[s[2 * i + 1]]
            v[a] = (v[a] + v[b] + x) & M64
            v[d] = _rotr64(v[d] ^ v[a], 32)
            v[c] = (v[c] + v[d]) & M64
            v[b] = _rotr64(v[b] ^ v[c], 24)
            v[a] = (v[a] + v[b] + y) & M64
            v[d] = _rotr64(v[d] ^ v[a], 16)
            v[c] = (v[c] + v[d]) & M64
            v[b] = _rotr64(v[b] ^ v[c], 63)
    for i in range(8):
        h[i] ^= v[i] ^ v[i + 8]


def blake2b_pure(data: bytes, key: bytes = b"", digest_size: int = 64, person: bytes = b"") -> bytes:
    """BLAKE2b as in RFC 7693 with the parameter block's key length, digest size and personalisation."""
    assert 1 <= digest_size <= 64 and len(key) <= 64 and len(person) <= 16
    h = list(_IV)
    h[0] ^= 0x01010000 ^ (len(key) << 8) ^ digest_size  # depth 1, fanout 1, key length, digest length
    p = person.ljust(16, b"\0")  # parameter block bytes 48..63 = words 6 and 7
    h[6] ^= struct.unpack("<Q", p[:8])[0]
    h[7] ^= struct.unpack("<Q", p[8:])[0]
    stream = (key.ljust(128, b"\0") if key else b"") + data
    t = 0
    if not stream:
        _compress(h, bytes(128), 0, True)
    while stream:
        block, stream = stream[:128], stream[128:]
        t += len(block)
        _compress(h, block.ljust(128, b"\0"), t, not stream)
    return struct.pack("<8Q", *h)[:digest_size]


def _check_blake2b_pure() -> None:
    abc = ("ba80a53f981c4d0d6a2797b69f12f6e94c212f14685ac4b74b12bb6fdbffa2d1"
           "7d87c5392aab792dc252d5de4533cc9518d38aa8dbf1925ab92386edd4009923")  # RFC 7693, Appendix A
    assert blake2b_pure(b"abc").hex() == abc, "pure BLAKE2b fails RFC 7693 Appendix A"
    kat0 = ("10ebb67700b1868efb4417987acf4690ae9d972fb7a590c2f02871799aaa4786"
            "b5e996e8f0f4eb981fc214b005f42d2ff4233499391653df7aefcbc13fc51568")  # blake2b-kat.txt, in=""
    assert blake2b_pure(b"", key=bytes(range(64))).hex() == kat0, "pure BLAKE2b fails the keyed KAT"


# --------------------------------------------------------------------------------------------
# Pure-Python MurmurHash3_x64_128, independent of the mmh3 package.
# --------------------------------------------------------------------------------------------
def _rotl64(x: int, n: int) -> int:
    return ((x << n) | (x >> (64 - n))) & M64


def _fmix64(k: int) -> int:
    k ^= k >> 33
    k = (k * 0xFF51AFD7ED558CCD) & M64
    k ^= k >> 33
    k = (k * 0xC4CEB9FE1A85EC53) & M64
    return k ^ (k >> 33)


def murmur3_x64_128_pure(data: bytes, seed: int) -> tuple[int, int]:
    """Austin Appleby's MurmurHash3_x64_128; returns (h1, h2), the two little-endian output words."""
    c1, c2 = 0x87C37B91114253D5, 0x4CF5AD432745937F
    h1 = h2 = seed & 0xFFFFFFFF
    n = len(data)
    nblocks = n // 16
    for i in range(nblocks):
        k1, k2 = struct.unpack_from("<QQ", data, 16 * i)
        k1 = (_rotl64((k1 * c1) & M64, 31) * c2) & M64
        h1 ^= k1
        h1 = (((_rotl64(h1, 27) + h2) & M64) * 5 + 0x52DCE729) & M64
        k2 = (_rotl64((k2 * c2) & M64, 33) * c1) & M64
        h2 ^= k2
        h2 = (((_rotl64(h2, 31) + h1) & M64) * 5 + 0x38495AB5) & M64
    tail = data[16 * nblocks:]
    k1 = int.from_bytes(tail[:8], "little")
    k2 = int.from_bytes(tail[8:], "little")
    if len(tail) > 8:
        h2 ^= (_rotl64((k2 * c2) & M64, 33) * c1) & M64
    if len(tail) > 0:
        h1 ^= (_rotl64((k1 * c1) & M64, 31) * c2) & M64
    h1 ^= n
    h2 ^= n
    h1 = (h1 + h2) & M64
    h2 = (h2 + h1) & M64
    h1, h2 = _fmix64(h1), _fmix64(h2)
    h1 = (h1 + h2) & M64
    h2 = (h2 + h1) & M64
    return h1, h2


def _check_murmur_pure() -> None:
    """SMHasher's VerificationTest: hash 0, 0..1, ..., 0..254 with seed 256-i, hash the hashes."""
    out = b""
    for i in range(256):
        h1, h2 = murmur3_x64_128_pure(bytes(range(i)), 256 - i)
        out += struct.pack("<QQ", h1, h2)
    h1, _ = murmur3_x64_128_pure(out, 0)
    assert h1 & 0xFFFFFFFF == 0x6384BA69, "pure MurmurHash3_x64_128 fails SMHasher's verification value"


# --------------------------------------------------------------------------------------------
# Hash vectors
# --------------------------------------------------------------------------------------------
KEY = bytes(range(32))  # 0x00..0x1f: a public test key, never a real one
PAIRS = [
    ("age", "39"),
    ("workclass", "State-gov"),
    ("education", "Bachelors"),
    ("native-country", "United-States"),
    ("city", "Zürich"),  # non-ASCII: UTF-8 c3 bc
    ("city", "北京"),  # three-byte UTF-8
    ("emoji", "😀"),  # four-byte UTF-8
    ("note", ""),  # empty value: the message ends with the separator
    ("", "x"),  # empty field name
    ("sep", "a\x1fb"),  # a value may contain the separator
    ("occupation", "Adm-clerical"),
    ("relationship", "Not-in-family"),
]
SEEDS = (0, 42)
BITS = (20, 24)


def _derive(digest: int) -> list[dict]:
    """Index and sign by plain integer arithmetic, for every (bits, signed) combination."""
    out = []
    for bits in BITS:
        for signed in (False, True):
            out.append({"bits": bits, "signed": signed, "index": digest % (2 ** bits),
                        "sign": -1 if signed and digest >= 2 ** 63 else 1})
    return out


def make_hash_vectors() -> dict:
    from shared import hashspec as hs

    person, kid_person = b"hashbridge.v1", b"hashbridge.kid"
    assert hs.PERSON == person and hs.KEY_ID_PERSON == kid_person and hs.SEPARATOR == b"\x1f"
    kid = blake2b_pure(b"hashbridge key id", key=KEY, digest_size=8, person=kid_person)
    assert kid == hs.key_id(KEY)
    keyed = []
    for field, value in PAIRS:
        message = field.encode("utf-8") + b"\x1f" + value.encode("utf-8")
        assert message == hs.feature_bytes(field, value)
        raw = blake2b_pure(message, key=KEY, digest_size=8, person=person)
        digest = int.from_bytes(raw, "little")
        derived = _derive(digest)
        for d in derived:
            h = hs.FeatureHasher.keyed(KEY, d["bits"], d["signed"])
            assert h.digest64(message) == digest
            assert h.index_sign(field, value) == (d["index"], d["sign"]), (field, value, d)
        keyed.append({"field": field, "value": value, "message_hex": message.hex(), "digest_hex": raw.hex(),
                      "digest_u64": digest, "derived": derived})
    assert {d["sign"] for v in keyed for d in v["derived"]} == {-1, 1}, "pick pairs that show both signs"
    mm = []
    for seed in SEEDS:
        seed_kid = blake2b_pure(b"mmh3 seed %d" % seed, digest_size=8, person=kid_person)
        assert seed_kid == hs.mmh3_key_id(seed)
        rows = []
        for field, value in PAIRS:
            message = field.encode("utf-8") + b"\x1f" + value.encode("utf-8")
            digest = murmur3_x64_128_pure(message, seed)[0]
            derived = _derive(digest)
            for d in derived:
                h = hs.FeatureHasher.public_mmh3(d["bits"], d["signed"], seed=seed)
                assert h.digest64(message) == digest
                assert h.index_sign(field, value) == (d["index"], d["sign"])
            rows.append({"field": field, "value": value, "message_hex": message.hex(), "digest_u64": digest,
                         "derived": derived})
        mm.append({"seed": seed, "key_id_hex": seed_kid.hex(), "vectors": rows})
    return {
        "spec": "hashbridge hash spec v1 (docs/hash-spec.md)",
        "generated_by": "tests/vectors/make_vectors.py (cross-checked: pure-Python BLAKE2b and MurmurHash3)",
        "spec_version": 1,
        "blake2b_keyed": {
            "algorithm": 1,
            "person": person.decode(), "key_id_person": kid_person.decode(),
            "key_id_message": "hashbridge key id",
            "key_hex": KEY.hex(), "key_id_hex": kid.hex(),
            "vectors": keyed,
        },
        "mmh3_public": {"algorithm": 2, "key_id_message": "mmh3 seed <decimal seed>", "seeds": mm},
    }


# --------------------------------------------------------------------------------------------
# Frame vectors: hand-assembled bytes, compared with shared.frames
# --------------------------------------------------------------------------------------------
def _pad8(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 8)


def _hand_header(kind: int, flags: int, alg: int, bits: int, signed: int, kid: bytes, n: int, nnz: int,
                 aux: int, model_version: int) -> bytes:
    h = (b"HBFR" + struct.pack("<BBH", 1, kind, flags) + struct.pack("<BBBB", alg, bits, signed, 1) + kid
         + struct.pack("<III", n, nnz, aux) + struct.pack("<Q", model_version))
    assert len(h) == 40
    return h


def _arr(fmt: str, xs: list) -> bytes:
    return _pad8(struct.pack("<%d%s" % (len(xs), fmt), *xs))


def make_frame_vectors() -> dict:
    import numpy as np

    from shared import frames as fr
    from shared import hashspec as hs
    from shared.errors import FrameError

    kid = blake2b_pure(b"hashbridge key id", key=KEY, digest_size=8, person=b"hashbridge.kid")
    s20 = hs.SpecId(hs.Algorithm.BLAKE2B_KEYED, 20, False, kid)
    s24 = hs.SpecId(hs.Algorithm.BLAKE2B_KEYED, 24, True, kid)
    k20, k24 = (1, 20, 0, kid), (1, 24, 1, kid)
    # train: 3 records (labels 1, 0, 1) with 2, 0 and 3 indices
    labels, offsets, indices = [1, 0, 1], [0, 2, 2, 5], [5, 1048575, 0, 17, 65536]
    weights, values = [1.0, 0.5, 2.0], [1.0, -1.0, 1.0, 1.0, -1.0]
    rids = [1, 2**64 - 1, 0x0123456789ABCDEF]
    probs = [0.25, 1.0, 0.0]
    cases = [
        ("train", {"labels": labels, "offsets": offsets, "indices": indices}, s20,
         _hand_header(1, 0, *k20, 3, 5, 0, 0) + _arr("B", labels) + _arr("I", offsets) + _arr("I", indices),
         lambda: fr.encode_train(s20, np.array(labels), np.array(offsets), np.array(indices))),
        ("train_weights_values",
         {"labels": labels, "weights": weights, "offsets": offsets, "indices": indices, "values": values}, s24,
         _hand_header(1, 3, *k24, 3, 5, 0, 0) + _arr("B", labels) + _arr("f", weights) + _arr("I", offsets)
         + _arr("I", indices) + _arr("f", values),
         lambda: fr.encode_train(s24, np.array(labels), np.array(offsets), np.array(indices),
                                 weights=np.array(weights), values=np.array(values))),
        ("train_empty", {"labels": [], "offsets": [0], "indices": []}, s20,
         _hand_header(1, 0, *k20, 0, 0, 0, 0) + _arr("I", [0]),
         lambda: fr.encode_train(s20, np.zeros(0), np.zeros(1), np.zeros(0))),
        ("score", {"request_ids": rids, "offsets": offsets, "indices": indices}, s20,
         _hand_header(2, 0, *k20, 3, 5, 0, 0) + _arr("Q", rids) + _arr("I", offsets) + _arr("I", indices),
         lambda: fr.encode_score(s20, np.array(rids, np.uint64), np.array(offsets), np.array(indices))),
        ("score_values", {"request_ids": rids, "offsets": offsets, "indices": indices, "values": values}, s24,
         _hand_header(2, 2, *k24, 3, 5, 0, 0) + _arr("Q", rids) + _arr("I", offsets) + _arr("I", indices)
         + _arr("f", values),
         lambda: fr.encode_score(s24, np.array(rids, np.uint64), np.array(offsets), np.array(indices),
                                 values=np.array(values))),
        ("prediction", {"request_ids": rids, "probabilities": probs, "model_version": 7}, s20,
         _hand_header(3, 0, *k20, 3, 0, 0, 7) + _arr("Q", rids) + _arr("d", probs),
         lambda: fr.encode_prediction(s20, np.array(rids, np.uint64), np.array(probs), 7)),
        ("error", {"request_ids": rids[:2], "reason": "spec_mismatch: modèle", "model_version": 7}, s20,
         _hand_header(4, 0, *k20, 2, 0, len("spec_mismatch: modèle".encode()), 7) + _arr("Q", rids[:2])
         + _pad8("spec_mismatch: modèle".encode()),
         lambda: fr.encode_error(s20, np.array(rids[:2], np.uint64), "spec_mismatch: modèle", 7)),
    ]
    valid = []
    by_name = {}
    for name, fields, spec, hand, encode in cases:
        code = encode()
        assert code == hand, f"{name}: encoder and hand packing differ"
        f = fr.decode(hand)
        for key, want in fields.items():
            got = getattr(f, key)
            got = got.tolist() if hasattr(got, "tolist") else got
            assert got == want, (name, key, got, want)
        valid.append({"name": name, "kind": f.kind.name.lower(), "spec": {
            "algorithm": int(spec.algorithm), "bits": spec.bits, "signed": spec.signed,
            "key_id_hex": spec.key_id.hex(), "version": spec.version},
            "fields": fields, "hex": hand.hex()})
        by_name[name] = hand

    def patch(name: str, offset: int, fmt: str, value: int) -> bytes:
        b = bytearray(by_name[name])
        struct.pack_into(fmt, b, offset, value)
        return bytes(b)

    t, tw, p, e = by_name["train"], by_name["train_weights_values"], by_name["prediction"], by_name["error"]
    # byte offsets inside "train": header 40, labels 40..47, offsets 48..63, indices 64..87
    # inside "train_weights_values": labels 40, weights 48..63, offsets 64, indices 80, values 104..127
    nan32 = struct.unpack("<I", struct.pack("<f", float("nan")))[0]
    invalid = [
        ("truncated_header", t[:39], "truncated"),
        ("truncated_body", t[:60], "truncated"),
        ("bad_magic", b"HBFX" + t[4:], "bad_magic"),
        ("bad_version", patch("train", 4, "<B", 2), "bad_version"),
        ("bad_kind", patch("train", 5, "<B", 9), "bad_kind"),
        ("bad_flags", patch("train", 6, "<H", 4), "bad_flags"),
        ("score_with_weights_flag", patch("score", 6, "<H", 1), "bad_flags"),
        ("bad_spec_algorithm", patch("train", 8, "<B", 3), "bad_spec"),
        ("bad_spec_bits", patch("train", 9, "<B", 32), "bad_spec"),
        ("bad_spec_version", patch("train", 11, "<B", 2), "bad_spec"),
        ("length_mismatch_trailing", t + bytes(8), "length_mismatch"),
        ("offsets_start", patch("train", 48, "<I", 1), "offsets_start"),
        ("count_mismatch", patch("train", 60, "<I", 4), "count_mismatch"),
        ("offsets_backwards", patch("train", 56, "<I", 1), "offsets_backwards"),
        ("index_out_of_range", patch("train", 68, "<I", 2**20), "index_out_of_range"),
        ("bad_label", patch("train", 41, "<B", 2), "bad_label"),
        ("bad_weight_negative", patch("train_weights_values", 48, "<f", -1.0), "bad_weight"),
        ("bad_value_nan", patch("train_weights_values", 104, "<I", nan32), "bad_value"),
        ("bad_probability", patch("prediction", 64, "<d", 1.5), "bad_probability"),
        ("prediction_with_indices", patch("prediction", 24, "<I", 1), "count_mismatch"),
        ("error_reason_too_long", patch("error", 28, "<I", 40), "truncated"),
    ]
    del tw, p, e
    bad = []
    for name, data, reason in invalid:
        try:
            fr.decode(data)
        except FrameError as exc:
            assert exc.reason == reason, (name, exc.reason, reason)
        else:
            raise AssertionError(f"{name}: decoded without error")
        bad.append({"name": name, "hex": data.hex(), "reason": reason})
    return {
        "spec": "hashbridge frame codec v1 (docs/wire-format.md)",
        "generated_by": "tests/vectors/make_vectors.py (hand-assembled struct packing == shared.frames)",
        "key_hex": KEY.hex(),
        "valid": valid,
        "invalid": bad,
    }


def main(argv: list[str]) -> int:
    _check_blake2b_pure()
    _check_murmur_pure()
    import mmh3

    for data in (b"", b"a", b"hello world, more than sixteen bytes", bytes(range(40))):
        for seed in SEEDS:
            assert murmur3_x64_128_pure(data, seed) == mmh3.hash64(data, seed, signed=False)
    outputs = {"hash_v1.json": make_hash_vectors(), "frames_v1.json": make_frame_vectors()}
    status = 0
    for name, obj in outputs.items():
        text = json.dumps(obj, indent=1, ensure_ascii=False) + "\n"
        path = HERE / name
        if "--check" in argv:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                print(f"{name}: stored vectors differ from a fresh derivation", file=sys.stderr)
                status = 1
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
