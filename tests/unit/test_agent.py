"""Agent frames carry, record for record, what ``Hasher.record`` gives; bad records are counted and
skipped (or raised under strict at the frame cut); nothing accepted is lost on flush or close."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from prometheus_client import CollectorRegistry

from producer.agent import Agent
from producer.edges import fit_edges
from producer.hashing import make_hasher
from producer.metrics import ProducerMetrics
from producer.recordbuffer import ColumnBuffer
from producer.schema import Schema, load_schema
from producer.settings import ProducerSettings
from shared.datasets import adult_dir
from shared.errors import ConfigError, RecordError
from shared.frames import Kind, decode

ROOT = Path(__file__).resolve().parents[2]
ADULT = adult_dir()
KEY = bytes(range(32))


class CapturePublisher:
    """Keeps every payload; counts a flush as the broker taking everything."""

    def __init__(self) -> None:
        from producer.publisher import Deliveries

        self.stats = Deliveries()
        self.payloads: list[bytes] = []
        self.flushes = 0

    def send(self, payload: bytes, n_records: int, key: bytes | None = None) -> None:
        self.payloads.append(payload)
        self.stats.frames_sent += 1
        self.stats.records_sent += n_records

    def flush(self, timeout: float = 60.0) -> int:
        self.flushes += 1
        self.stats.records_acked = self.stats.records_sent
        return 0


@pytest.fixture(scope="module")
def adult_schema_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("schema")
    shutil.copy(ROOT / "examples" / "adult.schema.toml", d)
    fit_edges(load_schema(d / "adult.schema.toml"), str(ADULT / "adult.data"))
    return d / "adult.schema.toml"


@pytest.fixture(scope="module")
def adult_records(adult_schema_path: Path) -> list[dict[str, Any]]:
    names = load_schema(adult_schema_path).names
    assert names is not None
    with open(ADULT / "adult.test", newline="") as f:
        rows = [dict(zip(names, row)) for row in csv.reader(f) if len(row) == len(names)]
    return rows[:2600]


def _variant(path: Path, tmp_path: Path, variant: str) -> Schema:
    text = path.read_text()
    if variant == "signed":
        text = text.replace("signed = false", "signed = true")
    elif variant == "crosses":
        text += '\n[[cross]]\nfields = ["education", "occupation"]\n[[cross]]\nfields = ["sex", "age"]\n'
    elif variant == "raw_numeric_skip_missing":
        text = text.replace('[numeric.capital-gain]\nbins = "quantile"\nn_bins = 20',
                            "[numeric.capital-gain]\nraw = true")
        text = text.replace('token = "__missing__"', 'policy = "skip"')
    elif variant == "rare":
        text += '\n[[cross]]\nfields = ["education", "occupation"]\n[rare]\nk = 3\nwindow = 500\n'
    out = tmp_path / "adult.schema.toml"
    out.write_text(text)
    shutil.copy(path.parent / "adult.edges.json", tmp_path / "adult.edges.json")
    return load_schema(out)


def _defects(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Adult records with every kind of defect and value type an application may send."""
    out = [dict(r) for r in records]
    for i, r in enumerate(out):
        if i % 97 == 0:
            del r["occupation"]  # an absent feature field
        if i % 89 == 1:
            r["income"] = "maybe"  # bad label
        if i % 131 == 2:
            del r["income"]  # absent label
        if i % 113 == 3:
            r["age"] = "forty"  # unparseable number
        if i % 61 == 4:
            r["workclass"] = "  Självständig\t"  # non-ASCII, padded
        if i % 71 == 5:
            r["native-country"] = None
        if i % 83 == 6:
            r["education"] = "Bach\x00elors"  # a NUL inside a value
        if i % 53 == 7:
            r["race"] = " ?"  # a missing value
    return out


def _expected(schema: Schema, records: list[dict[str, Any]]) -> tuple[list[int], list[int], list[float], list[int]]:
    """Labels, row lengths, indices and values through ``Hasher.record``, bad records left out."""
    hasher = make_hasher(schema, KEY)
    labels, lengths, indices, values = [], [], [], []
    for r in records:
        try:
            label, idx, vals = hasher.record(r)
        except RecordError:
            continue
        labels.append(label)
        lengths.append(len(idx))
        indices += idx
        values += vals
    return labels, lengths, indices, values


def _published(pub: CapturePublisher) -> tuple[list[int], list[int], list[int], list[float] | None]:
    frames = [decode(p, Kind.TRAIN) for p in pub.payloads]
    labels = [x for f in frames for x in f.labels.tolist()]
    lengths = [x for f in frames for x in np.diff(f.offsets).tolist()]
    indices = [x for f in frames for x in f.indices.tolist()]
    vals = [f.values for f in frames]
    values = None if any(v is None for v in vals) else [x for v in vals for x in v.tolist()]
    return labels, lengths, indices, values


def _agent(schema: Schema, frame_records: int = 1000, strict: bool = False, hash_records: int = 1,
           max_delay: float = 3600.0) -> tuple[Agent, CapturePublisher]:
    """An agent on a capturing publisher; ``max_delay`` an hour so that a slow machine never cuts
    a buffer by age in tests that count cuts (the delay has its own tests)."""
    pub = CapturePublisher()
    settings = ProducerSettings(frame_records=frame_records, strict=strict)
    agent = Agent(make_hasher(schema, KEY), settings, ProducerMetrics(CollectorRegistry()), pub,  # type: ignore[arg-type]
                  hash_records=hash_records, max_delay=max_delay)
    return agent, pub


def _not_here(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("this frame should have gone through Hasher.batch")


def _bad_reasons(schema: Schema, records: list[dict[str, Any]]) -> dict[str, int]:
    hasher = make_hasher(schema, KEY)
    out: dict[str, int] = {}
    for r in records:
        try:
            hasher.record(r)
        except RecordError as exc:
            out[exc.reason] = out.get(exc.reason, 0) + 1
    return out


@pytest.mark.parametrize("variant", ["plain", "signed", "crosses", "raw_numeric_skip_missing", "rare"])
def test_frames_carry_what_the_record_path_gives(adult_schema_path, adult_records, tmp_path, variant):
    schema = _variant(adult_schema_path, tmp_path, variant)
    records = _defects(adult_records)
    agent, pub = _agent(schema, frame_records=400, hash_records=1000)  # cuts of 1200: three frames each
    agent.hasher.records = _not_here  # type: ignore[method-assign]  # every frame goes columnar
    with agent:
        for r in records:
            agent.send(r)
        assert agent.buffered == len(records) % 1200  # two cuts, the rest waits for close()
        assert len(pub.payloads) == 6
    labels, lengths, indices, values = _published(pub)
    want = _expected(schema, records)
    assert (labels, lengths, indices) == (want[0], want[1], want[2])
    if schema.needs_values:
        assert values == pytest.approx(want[3])
        if variant == "signed":
            assert {-1.0, 1.0} <= set(values)
    else:
        assert values is None
    reasons = _bad_reasons(schema, records)
    assert set(reasons) == {"bad_label", "bad_number"}
    assert dict(agent.bad) == reasons
    assert agent.accepted == len(records) and len(labels) + sum(reasons.values()) == len(records)
    assert pub.stats.records_acked == len(labels) and pub.flushes == 1
    assert [decode(p, Kind.TRAIN).n_records <= 400 for p in pub.payloads].count(True) == len(pub.payloads)
    for reason, count in reasons.items():
        assert agent.metrics.bad_records.labels(reason)._value.get() == count


def _typed_schema(tmp_path: Path) -> Schema:
    (tmp_path / "t.schema.toml").write_text(
        'categorical = ["city", "code", "flag"]\n[label]\ncolumn = "y"\npositive = ["1", "true"]\n'
        '[numeric.amount]\nedges = [0.5, 10, 1e6]\n[numeric.count]\nedges = [1, 2, 3]\n')
    return load_schema(tmp_path / "t.schema.toml")


def _typed_records(n: int) -> list[dict[str, Any]]:
    """Python-typed values as JSON would give them: ints, floats, bools, None, strings."""
    return [{"city": f"c{i % 50}", "code": i * 7919 - 10**6, "flag": bool(i % 3), "y": i % 2,
             "amount": (i % 40) / 3 if i % 5 else i % 40, "count": i % 6} for i in range(n)]


def test_python_typed_values_match_the_record_path(tmp_path):
    schema = _typed_schema(tmp_path)
    records = _typed_records(6000)  # > 2048 distinct ints per frame: the kernel path casts them
    agent, pub = _agent(schema, frame_records=3000)
    with agent:
        for r in records:
            agent.send(r)
    assert _published(pub)[:3] == _expected(schema, records)[:3]
    assert not agent.bad


@pytest.mark.parametrize("odd", [b"bytes", 2.5, np.int64(3), [1]], ids=["bytes", "float", "numpy", "list"])
def test_a_column_arrow_would_change_goes_the_record_path(tmp_path, odd):
    schema = _typed_schema(tmp_path)
    records = _typed_records(300)
    records[17]["code"] = odd  # a categorical column: a float there would print differently in Arrow
    buf = ColumnBuffer(schema.input_columns, frozenset({"amount", "count"}))
    for r in records:
        buf.flat.extend(r[c] for c in schema.input_columns)
    assert buf.batch() is None and len(buf.records()) == 300
    agent, pub = _agent(schema)
    agent.hasher.batch = _not_here  # type: ignore[method-assign]
    with agent:
        for r in records:
            agent.send(r)
    assert _published(pub)[:3] == _expected(schema, records)[:3]


def test_mixed_ints_and_floats_in_a_numeric_field_match(tmp_path):
    schema = _typed_schema(tmp_path)
    records = _typed_records(500)
    assert {type(r["amount"]) for r in records} == {int, float}
    agent, pub = _agent(schema)
    with agent:
        for r in records:
            agent.send(r)
    assert _published(pub)[:3] == _expected(schema, records)[:3]


def test_strict_raises_at_the_cut_after_publishing_the_good_records(adult_schema_path, adult_records):
    schema = load_schema(adult_schema_path)
    records = [dict(r) for r in adult_records[:250]]
    records[30]["income"] = "maybe"
    records[120]["age"] = "forty"
    agent, pub = _agent(schema, frame_records=100, strict=True)
    for r in records[:99]:
        agent.send(r)  # nothing is checked before the cut
    with pytest.raises(RecordError) as err:
        agent.send(records[99])
    assert err.value.reason == "bad_label" and "record 30 " in str(err.value) and "maybe" not in str(err.value)
    assert pub.stats.records_sent == 99 and agent.buffered == 0
    for r in records[100:200]:
        try:
            agent.send(r)
        except RecordError as exc:
            assert exc.reason == "bad_number" and "forty" not in str(exc)
    assert agent.bad == {"bad_label": 1, "bad_number": 1}
    for r in records[200:]:
        agent.send(r)
    agent.close()  # the last 50 records: no bad one
    assert pub.stats.records_acked == 248
    assert _published(pub)[:3] == _expected(schema, records)[:3]


def test_the_record_is_copied_so_a_reused_dict_is_safe(adult_schema_path, adult_records):
    schema = load_schema(adult_schema_path)
    agent, pub = _agent(schema)
    scratch: dict[str, Any] = {}
    with agent:
        for r in adult_records[:300]:
            scratch.clear()
            scratch.update(r)
            agent.send(scratch)
    assert _published(pub)[:3] == _expected(schema, adult_records[:300])[:3]


def test_flush_sends_the_partial_frame_and_close_loses_nothing(adult_schema_path, adult_records):
    schema = load_schema(adult_schema_path)
    agent, pub = _agent(schema, frame_records=4096)
    for r in adult_records[:10]:
        agent.send(r)
    assert pub.payloads == [] and agent.buffered == 10
    assert agent.flush() == 0
    assert pub.stats.records_acked == 10 and agent.buffered == 0 and pub.flushes == 1
    assert agent.flush() == 0 and len(pub.payloads) == 1  # nothing buffered: no empty frame
    agent.send(adult_records[10])
    agent.close()
    assert pub.stats.records_acked == 11 and len(pub.payloads) == 2


def test_leaving_the_block_on_an_error_publishes_what_was_accepted(adult_schema_path, adult_records):
    schema = load_schema(adult_schema_path)
    agent, pub = _agent(schema, strict=True)
    bad = dict(adult_records[0], income="maybe")
    with pytest.raises(KeyboardInterrupt):
        with agent:
            for r in [bad] + adult_records[1:5]:
                agent.send(r)
            raise KeyboardInterrupt
    assert pub.stats.records_acked == 4 and agent.bad == {"bad_label": 1}


def test_a_record_waits_at_most_max_delay_while_records_keep_coming(adult_schema_path, adult_records,
                                                                    monkeypatch):
    import producer.agent as agent_mod

    clock = [100.0]
    monkeypatch.setattr(agent_mod.time, "monotonic", lambda: clock[0])
    schema = load_schema(adult_schema_path)
    agent, pub = _agent(schema, frame_records=4096, hash_records=16384, max_delay=0.5)
    for r in adult_records[:4]:
        agent.send(r)
        clock[0] += 0.125  # binary-exact steps: the first record is 0.375 s old at the fourth send
    assert pub.payloads == [] and agent.buffered == 4
    agent.send(adult_records[4])  # 0.5 s after the first: this send cuts all five
    assert agent.buffered == 0 and len(_published(pub)[0]) == 5
    clock[0] += 10.0  # an idle agent cuts nothing by itself...
    agent.send(adult_records[5])  # ...and the next record starts a new wait
    assert agent.buffered == 1 and len(pub.payloads) == 1
    agent.close()
    assert pub.stats.records_acked == 6


def test_max_delay_zero_sends_every_record_at_once_and_negative_is_refused(adult_schema_path, adult_records):
    schema = load_schema(adult_schema_path)
    agent, pub = _agent(schema, frame_records=4096, hash_records=16384, max_delay=0.0)
    for r in adult_records[:3]:
        agent.send(r)
    assert agent.buffered == 0 and len(pub.payloads) == 3
    with pytest.raises(ValueError):
        _agent(schema, max_delay=-1.0)


def test_send_refuses_what_is_not_a_mapping(adult_schema_path):
    agent, pub = _agent(load_schema(adult_schema_path))
    for thing in (["39", "State-gov"], "39,State-gov", None):
        with pytest.raises(TypeError):
            agent.send(thing)  # type: ignore[arg-type]
    assert agent.buffered == 0 and agent.accepted == 0


def test_an_all_bad_frame_publishes_nothing(adult_schema_path, adult_records):
    agent, pub = _agent(load_schema(adult_schema_path), frame_records=5)
    with agent:
        for r in adult_records[:5]:
            agent.send(dict(r, income=None))
    assert pub.payloads == [] and agent.bad == {"bad_label": 5}


def test_a_schema_without_label_is_refused(tmp_path):
    (tmp_path / "s.toml").write_text('categorical = ["a"]\n')
    with pytest.raises(ConfigError):
        Agent(make_hasher(load_schema(tmp_path / "s.toml"), KEY), ProducerSettings(),
              ProducerMetrics(CollectorRegistry()), CapturePublisher())  # type: ignore[arg-type]


def test_column_buffer_gives_the_arrays_arrow_would_build_value_by_value():
    rows = [(f"v{i % 300}", f" é{i}\x00" if i == 700 else f"ü{i % 7}", None if i == 900 else f"{i}", i - 500, i / 4)
            for i in range(1500)]
    buf = ColumnBuffer(("a", "b", "c", "d", "e"), frozenset({"e"}))
    for i, row in enumerate(rows):
        buf.flat.extend(row)
        if i % 400 == 399:
            buf.seal()  # the column c turns out not all str only in its third chunk
    batch = buf.batch()
    assert batch is not None and len(buf) == 1500
    for j, name in enumerate(batch.schema.names):
        want = pa.array([r[j] for r in rows])
        assert batch.column(j).equals(want), name
    buf.flat.extend(("x", "\ud800", "1", 1, 1.0))  # a lone surrogate: not UTF-8 at all
    assert buf.batch() is None
    buf.clear()
    assert len(buf) == 0 and buf.records() == []
