"""Nothing leaked: run the whole pipeline on UCI Adult, then search every byte it put on Kafka.

The real producer publishes adult.data under a unique prefix, the real trainer learns it and
publishes a model, the real scorer answers ``hashbridge score`` for part of adult.test. Then
:func:`hashbridge.privacyscan.scan_topics` reads every message (value, key, headers) of every
topic of the prefix: no raw value of four or more characters from the Adult files and no column
name may appear. The services' log output must not contain one either.

Numbers are looked for as whole numbers written in text on the topics; in the logs only text
values and column names are, since a log line's counts and ports are numbers of their own. The
three-letter column names (age, sex) are looked for in logs as whole words.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from hashbridge.privacyscan import Matcher, forbidden_from_csv, scan_text, scan_topics
from producer.keys import read_key
from producer.schema import load_schema
from shared.clients import make_producer
from shared.datasets import adult_dir
from shared.hashspec import key_id
from shared.settings import KafkaSettings, Topics

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "examples" / "adult.schema.toml"
BITS = 16
SCORE_ROWS = 2000
TIMEOUT = 300


def run(cmd: list[str], log: Path, timeout: float = TIMEOUT) -> None:
    with open(log, "ab") as out:
        rc = subprocess.run([sys.executable, *cmd], cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                            timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO)}).returncode
    assert rc == 0, f"{cmd[:3]} exited {rc}:\n" + log.read_text(errors="replace")[-3000:]


def test_no_raw_value_or_column_name_leaves_the_owner(kafka_bootstrap: str, tmp_path: Path) -> None:
    prefix = f"priv{uuid.uuid4().hex[:10]}."
    ks = KafkaSettings(bootstrap=kafka_bootstrap, topics=Topics(prefix))
    schema = tmp_path / "adult.schema.toml"
    schema.write_text(SCHEMA.read_text().replace("bits = 20", f"bits = {BITS}"))
    assert load_schema(schema).bits == BITS
    key = tmp_path / "owner.key"
    logs = {name: tmp_path / f"{name}.log" for name in ("keygen", "produce", "trainer", "scorer", "score")}
    kafka = ["--bootstrap", kafka_bootstrap]
    run(["-m", "hashbridge.cli", "keygen", "--out", str(key)], logs["keygen"])
    run(["-m", "hashbridge.cli", "produce", "--input", str(adult_dir() / "adult.data"), "--schema", str(schema),
         "--key", str(key), *kafka, "--topic-prefix", prefix, "--partitions", "2", "--no-progress"],
        logs["produce"])
    kid = key_id(read_key(key)).hex()
    run(["-m", "trainer", *kafka, "--topic-prefix", prefix, "--group", f"t-{prefix}", "--workers", "1",
         "--bits", str(BITS), "--key-id", kid, "--checkpoint-dir", str(tmp_path / "ckpt"),
         "--until-caught-up"], logs["trainer"])

    test_rows = tmp_path / "adult.test.part"
    with open(adult_dir() / "adult.test", encoding="utf-8") as src:
        lines = src.readlines()
    test_rows.write_text("".join(lines[:SCORE_ROWS + 1]))  # the first line is a comment
    with open(logs["scorer"], "ab") as out:
        scorer = subprocess.Popen([sys.executable, "-m", "scorer", *kafka, "--prefix", prefix,
                                   "--group", f"s-{prefix}", "--model-wait", "120", "--timeout", str(TIMEOUT)],
                                  cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                  env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        run(["-m", "hashbridge.cli", "score", "--input", str(test_rows), "--skip-rows", "1", "--schema",
             str(schema), "--key", str(key), *kafka, "--topic-prefix", prefix, "--out", str(tmp_path / "p.csv"),
             "--timeout", "120"], logs["score"])
    finally:
        os.killpg(scorer.pid, signal.SIGTERM)
        assert scorer.wait(60) == 0, logs["scorer"].read_text(errors="replace")[-3000:]
    answered = [ln for ln in (tmp_path / "p.csv").read_text().splitlines()[1:] if ",ok" in ln]
    assert len(answered) >= SCORE_ROWS * 0.99

    names = list(load_schema(schema).names or ())
    forbidden = forbidden_from_csv([adult_dir() / "adult.data", adult_dir() / "adult.test"], names)
    assert {b"Married-civ-spouse", b"United-States", b"workclass", b"77516"} <= forbidden
    findings, counts = scan_topics(ks, forbidden)
    print(f"\nforbidden tokens: {len(forbidden)}; scanned {sum(counts.values())} messages: {counts}; "
          f"findings: {len(findings)}")
    for f in findings[:20]:
        print(f"  {f}")
    assert counts[ks.topics.train] > 0 and counts[ks.topics.score] > 0
    assert counts[ks.topics.predictions] > 0 and counts[ks.topics.models] > 0
    assert not findings

    # positive control: the scan does see a value in a header and a number in a key
    canary = make_producer(ks)
    canary.produce(ks.topics.dlq, key=b"id=77516;", value=b"\x00" * 64, headers=[("note", b"Married-civ-spouse")])
    assert canary.flush(30) == 0
    caught, _ = scan_topics(ks, forbidden)
    assert {(f.where, f.token) for f in caught} == {("key", b"77516"), ("header:note", b"Married-civ-spouse")}

    text_tokens = forbidden - Matcher(forbidden).numbers
    short_names = {n for n in names if len(n) < 4}
    for name, log in logs.items():
        hits = scan_text(log.read_text(errors="replace").splitlines(), text_tokens, short_names)
        print(f"log {name}: {len(log.read_text(errors='replace').splitlines())} lines, {len(hits)} findings")
        assert not hits, f"{name} log leaks tokens at (line, length) {hits[:10]}"


def test_matcher_finds_text_anywhere_and_numbers_only_as_whole_numbers() -> None:
    m = Matcher({b"Private", b"77516"})
    assert [t for _, t in m.find(b"\x00\x01Private\xff")] == [b"Private"]
    assert [t for _, t in m.find(b'{"n": 77516}')] == [b"77516"]
    assert m.find(b"a77516") == [] and m.find(b"775160") == [] and m.find(b"1.77516") == []
    assert m.find(b"\x0377516\x99") == []  # digits inside random binary (a request id) are no text
