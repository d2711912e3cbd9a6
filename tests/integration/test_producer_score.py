"""``hashbridge score`` end to end through the real broker, against a tiny in-test replier that
answers score frames with prediction frames, an error frame, and silence for a few ids."""
from __future__ import annotations

import csv
import shutil
import threading
import uuid
from pathlib import Path

import numpy as np
from confluent_kafka import Consumer, Producer

from producer import scoreclient
from producer.edges import fit_edges
from producer.hashing import make_hasher
from producer.keys import read_key, write_key
from producer.schema import load_schema
from shared.clients import ensure_pipeline_topics
from shared.datasets import adult_dir
from shared.frames import Kind, decode, encode_error, encode_prediction
from shared.settings import KafkaSettings, Topics

ROOT = Path(__file__).resolve().parents[2]
ADULT = adult_dir()


def fake_prob(indices: np.ndarray) -> float:
    return float(int(indices.astype(np.uint64).sum()) % 1000) / 1000.0


class Replier(threading.Thread):
    """Reads the score topic; the first frame's ids 0-2 get an error reply, 3-4 no reply."""

    def __init__(self, bootstrap: str, topics: Topics) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topics = bootstrap, topics
        self.stop_flag = threading.Event()
        self.ready = threading.Event()
        self.frames = 0

    def run(self) -> None:
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"rep-{uuid.uuid4().hex}",
                      "auto.offset.reset": "earliest", "fetch.message.max.bytes": 16 << 20})
        p = Producer({"bootstrap.servers": self.bootstrap})
        c.subscribe([self.topics.score], on_assign=lambda *_: self.ready.set())
        try:
            while not self.stop_flag.is_set():
                for m in c.consume(100, timeout=0.2):
                    if m.error() is not None:
                        continue
                    f = decode(m.value(), Kind.SCORE)
                    ids = f.request_ids
                    probs = np.array([fake_prob(f.indices[f.offsets[i]:f.offsets[i + 1]]) for i in range(f.n_records)])
                    keep = np.ones(f.n_records, bool)
                    if self.frames == 0:
                        p.produce(self.topics.predictions, encode_error(f.spec, ids[:3].copy(), "spec_mismatch"),
                                  key=m.key())
                        keep[:5] = False
                    self.frames += 1
                    p.produce(self.topics.predictions,
                              encode_prediction(f.spec, ids[keep].copy(), probs[keep], model_version=7), key=m.key())
                    p.poll(0)
                p.flush(5)
        finally:
            c.close()


def test_score_joins_every_record_and_reports_errors_and_silence(kafka_bootstrap, tmp_path):
    shutil.copy(ROOT / "examples" / "adult.schema.toml", tmp_path)
    schema_path = tmp_path / "adult.schema.toml"
    fit_edges(load_schema(schema_path), str(ADULT / "adult.data"))
    write_key(tmp_path / "k")
    prefix = f"t{uuid.uuid4().hex[:10]}."
    topics = Topics(prefix)
    ensure_pipeline_topics(KafkaSettings(kafka_bootstrap, topics=topics))
    replier = Replier(kafka_bootstrap, topics)
    replier.start()
    assert replier.ready.wait(30)
    out = tmp_path / "scored.csv"
    try:
        rc = scoreclient.main(["--input", str(ADULT / "adult.test"), "--out", str(out), "--schema", str(schema_path),
                               "--key", str(tmp_path / "k"), "--bootstrap", kafka_bootstrap, "--topic-prefix", prefix,
                               "--timeout", "3", "--no-create-topics"])
    finally:
        replier.stop_flag.set()
        replier.join(10)
    assert rc == 1  # some records were not answered
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 16282  # the junk first line is listed as skipped, every record has a line
    status = [r["status"] for r in rows]
    assert rows[0]["local_id"] == "1" and status[0].startswith("skipped:wrong_column_count")
    assert status.count("error:spec_mismatch") == 3 and status.count("no_reply") == 2
    assert status.count("ok") == 16281 - 5

    # the probabilities joined back are those of each record's own indices
    schema = load_schema(schema_path)
    hasher = make_hasher(schema, read_key(tmp_path / "k"))
    with open(ADULT / "adult.test", newline="") as f:
        recs = [dict(zip(schema.names, r)) for r in csv.reader(f) if len(r) == 15]
    enc = hasher.records(recs, with_label=False)
    for r in rows[1:]:
        if r["status"] == "ok":
            i = int(r["local_id"]) - 2
            assert float(r["probability"]) == fake_prob(enc.indices[enc.offsets[i]:enc.offsets[i + 1]])
            assert r["model_version"] == "7"
