"""Feature indices must not depend on Python's per-process string hash randomisation.

The producer and any re-run of it must map a record to the same indices, so nothing in the hash
spec may use ``hash()``, set order or dict order of unsorted input. Two interpreters started with
different PYTHONHASHSEED values hash the same record; their results must agree with each other and
with this process. The child also reports ``hash("age")``, which must differ between the seeds:
that shows the environment variable really took effect, so the test could fail.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from shared.hashspec import FeatureHasher

REPO = Path(__file__).resolve().parents[2]
KEY_HEX = bytes(range(32)).hex()
RECORD = {"age": "39", "workclass": "State-gov", "city": "Zürich", "note": "", "emoji": "😀",
          "native-country": "United-States"}

CHILD = r"""
import json, sys
from shared.hashspec import FeatureHasher
key = bytes.fromhex(sys.argv[1])
record = json.loads(sys.argv[2])
pairs = set(record.items())  # set iteration order depends on PYTHONHASHSEED; the indices must not
hashers = {"keyed20": FeatureHasher.keyed(key, 20, signed=True),
           "keyed24": FeatureHasher.keyed(key, 24),
           "mmh3": FeatureHasher.public_mmh3(22, signed=True)}
out = {name: {f + "=" + v: list(h.index_sign(f, v)) for f, v in pairs} for name, h in hashers.items()}
out["order"] = [f for f, _ in pairs]
out["hash_age"] = hash("age")
print(json.dumps(out, sort_keys=True))
"""


def _in_process() -> dict:
    key = bytes.fromhex(KEY_HEX)
    hashers = {"keyed20": FeatureHasher.keyed(key, 20, signed=True), "keyed24": FeatureHasher.keyed(key, 24),
               "mmh3": FeatureHasher.public_mmh3(22, signed=True)}
    return {name: {f + "=" + v: list(h.index_sign(f, v)) for f, v in RECORD.items()} for name, h in hashers.items()}


def _child(seed: str) -> dict:
    env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", CHILD, KEY_HEX, json.dumps(RECORD)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout)


def test_indices_do_not_depend_on_pythonhashseed():
    one, two = _child("1"), _child("2")
    assert one["hash_age"] != two["hash_age"], "PYTHONHASHSEED did not reach the child"
    here = _in_process()
    for name in ("keyed20", "keyed24", "mmh3"):
        assert one[name] == two[name] == here[name], name
    assert set(one["keyed20"]) == {f"{f}={v}" for f, v in RECORD.items()}
