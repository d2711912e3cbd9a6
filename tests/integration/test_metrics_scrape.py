"""The three services on the real broker, scraped over HTTP while they run.

A relay producer hashes raw JSON records into frames, the trainer learns them and publishes a
model, the scorer answers score requests with it; each serves /metrics on its own port. The
counters must match the records sent, and the trainer's lag must fall to zero once it caught up.
``hashbridge status`` is pointed at the same pipeline and must agree.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import numpy as np
import pytest

from hashbridge.localkafka import free_port
from hashbridge.statusdata import ScrapeStatus, gather, scrape
from shared.clients import ensure_pipeline_topics, ensure_topics, make_producer
from shared.frames import encode_score
from shared.hashspec import Algorithm, SpecId, mmh3_key_id
from shared.settings import KafkaSettings, Topics

ROOT = Path(__file__).resolve().parents[2]
BITS = 12
SPEC = SpecId(Algorithm.MMH3_PUBLIC, BITS, False, mmh3_key_id(0))
N_TRAIN = 2000
N_SCORE = 300
DEADLINE = 240.0  # generous: seven engineers share two cores, and the trainer compiles its kernels
T = TypeVar("T")

SCHEMA = f"""
version = 1
names = ["colour", "shape", "y"]
categorical = ["colour", "shape"]
drop = []

[hash]
algorithm = "mmh3"
bits = {BITS}
signed = false

[label]
column = "y"
positive = ["1"]
negative = ["0"]
"""


def wait_for(cond: Callable[[], T], what: str, procs: dict[str, subprocess.Popen],
             timeout: float = DEADLINE) -> T:
    """Poll ``cond`` until truthy; fail early, with the reason, if a service exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        for name, proc in procs.items():
            if proc.poll() is not None:
                pytest.fail(f"{name} exited with {proc.returncode} while waiting for {what}")
        time.sleep(0.25)  # polling interval between scrapes, not a guess at readiness
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def total(s: ScrapeStatus, name: str) -> float | None:
    """A sample's value, summed over its labels; None while the service has not exported it."""
    if not s.ok:
        return None
    if name in s.values:
        return s.values[name]
    series = s.labelled.get(name)
    return sum(series.values()) if series else None


@pytest.fixture
def pipeline(kafka_bootstrap: str, tmp_path: Path) -> Iterator[tuple[KafkaSettings, str, dict, dict]]:
    ks = KafkaSettings(bootstrap=kafka_bootstrap, topics=Topics(f"t{uuid.uuid4().hex[:12]}."))
    ensure_pipeline_topics(ks, partitions=2)
    raw = ks.topics.prefix + "raw"
    ensure_topics(ks, {raw: 2})
    (tmp_path / "schema.toml").write_text(SCHEMA)
    ports = {"producer": free_port(), "trainer": free_port(), "scorer": free_port()}
    common = ["--bootstrap", kafka_bootstrap]
    commands = {
        "producer": ["producer", *common, "--topic-prefix", ks.topics.prefix, "--relay-topic", raw,
                     "--relay-group", f"relay-{ks.topics.prefix}", "--schema", str(tmp_path / "schema.toml"),
                     "--frame-records", "200", "--partitions", "2", "--no-progress",
                     "--metrics-port", str(ports["producer"])],
        "trainer": ["trainer", *common, "--topic-prefix", ks.topics.prefix, "--group", f"train-{ks.topics.prefix}",
                    "--workers", "1", "--bits", str(BITS), "--checkpoint-dir", str(tmp_path / "ckpt"),
                    "--checkpoint-seconds", "1", "--report-seconds", "1", "--session-timeout-ms", "6000",
                    "--metrics-port", str(ports["trainer"])],
        "scorer": ["scorer", *common, "--prefix", ks.topics.prefix, "--group", f"score-{ks.topics.prefix}",
                   "--model-wait", "120", "--session-timeout-ms", "6000", "--metrics-port", str(ports["scorer"])],
    }
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    procs: dict[str, subprocess.Popen] = {}
    logs = {name: tmp_path / f"{name}.log" for name in commands}
    try:
        for name, argv in commands.items():
            with open(logs[name], "wb") as out:
                procs[name] = subprocess.Popen([sys.executable, "-m", *argv], cwd=ROOT, env=env, stdout=out,
                                               stderr=subprocess.STDOUT, start_new_session=True)
        urls = {name: f"http://127.0.0.1:{port}/metrics" for name, port in ports.items()}
        yield ks, raw, procs, urls
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in procs.items():
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
            tail = logs[name].read_text(errors="replace")[-3000:]
            print(f"----- {name} (exit {proc.returncode}) -----\n{tail}")


def test_counters_match_and_lag_falls_to_zero(pipeline: tuple[KafkaSettings, str, dict, dict]) -> None:
    ks, raw, procs, urls = pipeline
    rng = np.random.default_rng(3)
    producer = make_producer(ks)
    for i in range(N_TRAIN):
        colour, shape = int(rng.integers(0, 5)), int(rng.integers(0, 3))
        label = "1" if (colour + shape) % 2 else "0"
        record = {"colour": f"c{colour}", "shape": f"s{shape}", "y": label}
        producer.produce(raw, value=json.dumps(record).encode(), partition=i % 2)
    assert producer.flush(30) == 0

    def metric(service: str, name: str) -> Callable[[], float | None]:
        return lambda: total(scrape(urls[service], 5.0), name)

    # producer: every raw record hashed, framed and acknowledged
    wait_for(lambda: metric("producer", "hb_producer_records_acked_total")() == N_TRAIN,
             "producer to acknowledge every record", procs)
    p = scrape(urls["producer"], 5.0)
    assert total(p, "hb_producer_records_total") == N_TRAIN
    assert total(p, "hb_producer_frames_total") == N_TRAIN // 200
    assert (total(p, "hb_producer_delivery_errors_total") or 0) == 0
    distinct = p.labelled.get("hb_producer_distinct_values")
    if distinct is not None:  # set by the columnar file path; the relay path does not estimate it yet
        assert distinct == {"field=colour": 5, "field=shape": 3}

    # trainer: learns them all, then its lag is zero on every partition it reports
    wait_for(lambda: metric("trainer", "hb_trainer_records_in_total")() == N_TRAIN,
             "trainer to consume every record", procs)
    wait_for(lambda: (lag := scrape(urls["trainer"], 5.0).labelled.get("hb_trainer_consumer_lag"))
             and len(lag) == 2 and sum(lag.values()) == 0, "trainer lag to reach zero", procs)
    t = scrape(urls["trainer"], 5.0)
    assert total(t, "hb_trainer_frames_in_total") == N_TRAIN // 200
    assert (total(t, "hb_trainer_rejected_frames_total") or 0) == 0
    wait_for(lambda: (metric("trainer", "hb_trainer_model_version")() or 0) >= 1, "a trainer checkpoint", procs)
    wait_for(lambda: "window=overall" in scrape(urls["trainer"], 5.0).labelled.get(
        "hb_trainer_progressive_auc", {}), "progressive AUC", procs)

    # scorer: picks the model up, then answers every request
    wait_for(lambda: (metric("scorer", "hb_scorer_model_version")() or 0) >= 1, "the scorer's first model", procs)
    ids = np.arange(N_SCORE, dtype=np.uint64)
    indices = rng.integers(0, 1 << BITS, N_SCORE * 2, dtype=np.uint32)
    offsets = np.arange(0, 2 * N_SCORE + 1, 2, dtype=np.uint32)
    for chunk in range(3):
        lo, hi = chunk * 100, (chunk + 1) * 100
        frame = encode_score(SPEC, ids[lo:hi], offsets[lo:hi + 1] - offsets[lo], indices[2 * lo:2 * hi])
        producer.produce(ks.topics.score, key=b"scrape-test", value=frame)
    assert producer.flush(30) == 0
    wait_for(lambda: metric("scorer", "hb_scorer_records_out_total")() == N_SCORE,
             "scorer to answer every request", procs)
    s = scrape(urls["scorer"], 5.0)
    assert total(s, "hb_scorer_records_in_total") == N_SCORE
    assert total(s, "hb_scorer_frames_in_total") == 3
    assert (s.labelled.get("hb_scorer_replies_total") or {}).get("outcome=ok") == 3  # reply messages
    assert s.values.get("hb_scorer_request_seconds_count") == 3

    # hashbridge status sees the same pipeline: frames on the topics, the trainer's committed lag
    group = f"train-{ks.topics.prefix}"

    def caught_up():  # the trainer auto-commits every 2 s: its committed lag follows its real lag
        st = gather(ks, metrics_urls=urls, groups=[group], timeout=10)
        g = st.group(group)
        return st if g is not None and g.lag == 0 and len(g.partitions) == 2 else None

    st = wait_for(caught_up, "the trainer's committed offsets to reach the end", procs)
    assert st.topic(ks.topics.train).messages == N_TRAIN // 200  # type: ignore[union-attr]
    assert st.model is not None and st.model.version >= 1
    assert all(x.ok for x in st.scrapes.values())
