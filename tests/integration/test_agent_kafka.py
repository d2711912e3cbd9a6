"""Agent through the real broker: every good record accepted by ``send`` is acknowledged and
arrives once, with the indices ``Hasher.record`` gives; bad ones are counted, never sent."""
from __future__ import annotations

import csv
import shutil
import uuid
from pathlib import Path

import numpy as np

from producer.agent import Agent
from producer.edges import fit_edges
from producer.hashing import make_hasher
from producer.schema import load_schema
from shared.datasets import adult_dir
from shared.errors import RecordError
from shared.frames import Kind, decode
from shared.settings import KafkaSettings, Topics
from tests.integration.test_producer_adult import read_topic

ROOT = Path(__file__).resolve().parents[2]
ADULT = adult_dir() / "adult.data"
KEY = bytes(range(32))


def test_agent_frames_arrive_complete_with_record_path_indices(kafka_bootstrap, topic_factory, tmp_path):
    shutil.copy(ROOT / "examples" / "adult.schema.toml", tmp_path)
    schema = fit_edges(load_schema(tmp_path / "adult.schema.toml"), str(ADULT))
    assert schema.names is not None
    with open(ADULT, newline="") as f:
        records = [dict(zip(schema.names, row)) for row in csv.reader(f) if len(row) == len(schema.names)][:9000]
    for i in range(0, len(records), 500):
        records[i]["income"] = "unknown"  # 18 bad labels, spread over every cut
    prefix = f"a{uuid.uuid4().hex[:10]}."
    topic_factory(4, name=prefix + "train")
    kafka = KafkaSettings(kafka_bootstrap, topics=Topics(prefix))
    with Agent.open(schema, KEY, kafka=kafka, frame_records=1000, hash_records=4000) as agent:
        for r in records:
            agent.send(r)
        assert agent.buffered == 1000  # two cuts of 4000 so far
    assert agent.bad == {"bad_label": 18} and agent.buffered == 0
    assert agent.stats.records_acked == len(records) - 18 and agent.stats.frames_failed == 0

    want_idx: list[int] = []
    want_len: list[int] = []
    ref = make_hasher(schema, KEY)
    for r in records:
        try:
            idx = ref.record(r)[1]
        except RecordError:
            continue
        want_idx += idx
        want_len.append(len(idx))
    msgs = sorted(read_topic(kafka_bootstrap, prefix + "train"), key=lambda m: m.timestamp()[1])
    frames = [decode(m.value(), Kind.TRAIN) for m in msgs]
    assert len(frames) == 9 and all(f.n_records <= 1000 for f in frames)
    # frames spread round-robin over partitions: compare as a multiset of rows
    got_rows = sorted(tuple(f.indices[f.offsets[i]:f.offsets[i + 1]].tolist())
                      for f in frames for i in range(f.n_records))
    bounds = np.cumsum([0] + want_len)
    want_rows = sorted(tuple(want_idx[bounds[i]:bounds[i + 1]]) for i in range(len(want_len)))
    assert got_rows == want_rows
