"""The producer loop without a broker: bad rows counted with line numbers, strict mode, frames cut."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from producer.hashing import make_hasher
from producer.metrics import ProducerMetrics
from producer.publisher import Deliveries
from producer.schema import load_schema
from producer.service import ProducerService
from producer.settings import ProducerSettings
from producer.sources import CsvSource, open_source
from shared.errors import RecordError
from shared.frames import Kind, decode

KEY = bytes(range(32))
SCHEMA = """names = ["color", "size", "y"]
header = false
categorical = ["color"]
[label]
column = "y"
positive = ["yes"]
negative = ["no"]
[numeric.size]
edges = [1, 10]
"""
ROWS = [
    "red,5,yes",        # 1
    "blue,abc,no",      # 2 bad number
    "green,7,maybe",    # 3 bad label
    "red,1",            # 4 wrong column count
    "red,3,no,extra",   # 5 wrong column count
    "?,,no",            # 6 missing values: fine
    "blue,12,yes",      # 7
]


class FakePublisher:
    """Collects frames as the broker would acknowledge them."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.markers: list[bytes] = []
        self.stats = Deliveries()

    def send(self, payload: bytes, n_records: int, key: bytes | None = None) -> None:
        self.frames.append(payload)
        self.stats.frames_sent += 1
        self.stats.records_sent += n_records
        self.stats.frames_acked += 1
        self.stats.records_acked += n_records

    def mark_end(self, payload: bytes) -> None:
        self.markers.append(payload)

    def flush(self, timeout: float = 60.0) -> int:
        return 0


def _service(tmp_path: Path, rows: list[str], fmt: str = "csv", **settings) -> tuple[ProducerService, FakePublisher]:
    (tmp_path / "s.toml").write_text(SCHEMA)
    schema = load_schema(tmp_path / "s.toml")
    data = tmp_path / ("in.csv" if fmt == "csv" else "in.jsonl")
    data.write_text("\n".join(rows) + "\n\n")
    pub = FakePublisher()
    svc = ProducerService(ProducerSettings(**settings), make_hasher(schema, KEY),
                          open_source(str(data), schema, schema.input_columns, fmt=fmt), pub,  # type: ignore[arg-type]
                          ProducerMetrics())
    return svc, pub


def test_bad_rows_are_counted_with_line_numbers_and_skipped(tmp_path):
    svc, pub = _service(tmp_path, ROWS)
    report = svc.run()
    assert report.bad_count == 4
    assert sorted((line, reason) for line, _, reason in report.bad_rows) == [
        (2, "bad_number"), (3, "bad_label"), (4, "wrong_column_count"), (5, "wrong_column_count")]
    assert dict(report.bad_by_reason) == {"bad_number": 1, "bad_label": 1, "wrong_column_count": 2}
    frames = [decode(f, Kind.TRAIN) for f in pub.frames]
    labels = np.concatenate([f.labels for f in frames])
    assert labels.tolist() == [1, 0, 1]  # lines 1, 6, 7: nothing else lost
    assert report.records_acked == 3


def test_a_run_that_sent_records_ends_with_one_empty_end_marker_frame(tmp_path):
    svc, pub = _service(tmp_path, ROWS)
    svc.run()
    assert len(pub.markers) == 1
    marker = decode(pub.markers[0], Kind.TRAIN)
    assert marker.n_records == 0 and marker.spec == decode(pub.frames[0]).spec
    svc, pub = _service(tmp_path, ROWS, end_markers=False)
    svc.run()
    assert pub.frames and pub.markers == []
    svc, pub = _service(tmp_path, [ROWS[1]])  # one bad row: nothing sent, nothing to mark
    svc.run()
    assert pub.frames == pub.markers == []
    svc, pub = _service(tmp_path, ROWS)
    svc.progress = lambda chunk, report: svc.stop()  # stopped (SIGTERM): its input did not end
    assert svc.run().stopped
    assert pub.frames and pub.markers == []


def test_strict_stops_at_the_first_bad_row_after_flushing(tmp_path):
    svc, pub = _service(tmp_path, ROWS, strict=True)
    with pytest.raises(RecordError, match="line 2: bad_number"):
        svc.run()
    assert [decode(f).n_records for f in pub.frames] == [1]  # line 1 went out, nothing after line 2
    assert pub.markers == []  # a run that failed does not say its input ended


def test_jsonl_bad_lines_have_line_numbers(tmp_path):
    rows = ['{"color": "red", "size": 5, "y": "yes"}', "not json", '{"color": "red", "size": "x", "y": "no"}',
            "[1, 2]", '{"color": "red", "size": 2, "y": "no"}']
    svc, pub = _service(tmp_path, rows, fmt="jsonl")
    report = svc.run()
    assert sorted((line, reason) for line, _, reason in report.bad_rows) == [
        (2, "bad_json"), (3, "bad_number"), (4, "not_an_object")]
    assert report.records_acked == 2


def test_frames_are_cut_at_frame_records_and_max_records_stops(tmp_path):
    rows = [f"c{i % 7},{i % 13},{'yes' if i % 3 else 'no'}" for i in range(1000)]
    svc, pub = _service(tmp_path, rows, frame_records=300)
    report = svc.run(max_records=900)
    sizes = [decode(f).n_records for f in pub.frames]
    assert sizes == [300, 300, 300] and report.records_acked == 900


def test_stop_ends_the_loop_and_flushes(tmp_path):
    rows = [f"c{i},{i},yes" for i in range(100)]
    svc, pub = _service(tmp_path, rows)
    svc.stop()
    report = svc.run()
    assert report.stopped and report.records_acked == report.records_read


def test_metrics_go_to_the_injected_registry(tmp_path):
    from prometheus_client import CollectorRegistry

    (tmp_path / "s.toml").write_text(SCHEMA)
    schema = load_schema(tmp_path / "s.toml")
    data = tmp_path / "in.csv"
    data.write_text("\n".join(ROWS) + "\n")
    registry = CollectorRegistry()
    hasher = make_hasher(schema, KEY)
    svc = ProducerService(ProducerSettings(), hasher, open_source(str(data), schema, schema.input_columns),
                          FakePublisher(), ProducerMetrics(registry))  # type: ignore[arg-type]
    svc.run()
    assert registry.get_sample_value("hb_producer_bad_records_total", {"reason": "wrong_column_count"}) == 2
    assert registry.get_sample_value("hb_producer_bad_records_total", {"reason": "bad_number"}) == 1
    assert registry.get_sample_value("hb_producer_distinct_values", {"field": "color"}) == 4  # red blue ? green
    assert registry.get_sample_value("hb_producer_key_info", {"key_id": hasher.spec.key_id_hex,
                                                              "spec": str(hasher.spec)}) == 1.0
    assert registry.get_sample_value("hb_producer_batch_seconds_count") == 1  # one CSV block
    assert registry.get_sample_value("hb_producer_hash_seconds_count") == 1
    assert registry.get_sample_value("hb_producer_hash_seconds_sum") > 0


def test_jsonl_records_observe_batch_and_hash_histograms(tmp_path):
    rows = ['{"color": "red", "size": 5, "y": "yes"}', '{"color": "blue", "size": 50, "y": "no"}']
    svc, pub = _service(tmp_path, rows, fmt="jsonl", frame_records=1)
    svc.run()
    assert svc.metrics.registry.get_sample_value("hb_producer_hash_seconds_count") == 1
    assert svc.metrics.registry.get_sample_value("hb_producer_batch_seconds_count") == 1
    assert len(pub.frames) == 2


@pytest.mark.parametrize("strict", [False, True])
def test_reader_rejects_are_reported_with_their_own_chunk(tmp_path, strict):
    """The CSV reader thread and pyarrow parse ahead, so when a chunk is encoded the rejects of
    later blocks may already be known; they must not count with this chunk. Under strict, exactly
    the rows before the first bad line go out (a reject counted early would stop the run sooner)."""
    (tmp_path / "s.toml").write_text('categorical = ["a"]\n[label]\ncolumn = "y"\npositive = ["1"]\n')
    schema = load_schema(tmp_path / "s.toml")
    lines = ["a,y"] + [f"v{i},1" if i % 1000 != 999 else "bad" for i in range(6000)]  # bad: 1001, 2001..
    (tmp_path / "in.csv").write_text("\n".join(lines) + "\n")
    for _ in range(5):  # the race needed read-ahead at the right moment: give it several chances
        pub = FakePublisher()
        svc = ProducerService(ProducerSettings(strict=strict, frame_records=100), make_hasher(schema, KEY),
                              CsvSource(tmp_path / "in.csv", schema, schema.input_columns, block_bytes=1 << 13),
                              pub, ProducerMetrics())  # type: ignore[arg-type]
        if strict:
            with pytest.raises(RecordError, match="line 1001: wrong_column_count"):
                svc.run()
            assert sum(decode(f).n_records for f in pub.frames) == 999  # lines 2..1000, not one fewer
        else:
            report = svc.run()
            assert [line for line, _, _ in report.bad_rows] == [1001 + 1000 * i for i in range(6)]
            assert report.records_acked == 5994


@pytest.mark.parametrize("strict", [False, True])
def test_a_reader_started_early_holds_every_reject_before_the_first_chunk(tmp_path, strict):
    """The producer starts the reader before its kernels load, so the whole file may be parsed
    (and every reject known) before the first chunk is encoded: the same rows must still go out."""
    (tmp_path / "s.toml").write_text('categorical = ["a"]\n[label]\ncolumn = "y"\npositive = ["1"]\n')
    schema = load_schema(tmp_path / "s.toml")
    lines = ["a,y"] + [f"v{i},1" if i % 1000 != 999 else "bad" for i in range(6000)]
    (tmp_path / "in.csv").write_text("\n".join(lines) + "\n")
    source = CsvSource(tmp_path / "in.csv", schema, schema.input_columns, block_bytes=1 << 13, readahead_blocks=64)
    source.start()
    deadline = time.monotonic() + 30
    while len(source.rejects.rows) < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(source.rejects.rows) == 6  # parsed to the end before anything was encoded
    pub = FakePublisher()
    svc = ProducerService(ProducerSettings(strict=strict, frame_records=100), make_hasher(schema, KEY), source,
                          pub, ProducerMetrics())  # type: ignore[arg-type]
    if strict:
        with pytest.raises(RecordError, match="line 1001: wrong_column_count"):
            svc.run()
        assert sum(decode(f).n_records for f in pub.frames) == 999
    else:
        report = svc.run()
        assert [line for line, _, _ in report.bad_rows] == [1001 + 1000 * i for i in range(6)]
        assert report.records_acked == 5994
    assert not [t for t in threading.enumerate() if t.name == "csv-reader"]


def test_a_started_reader_that_is_never_read_stops_on_close(tmp_path):
    (tmp_path / "s.toml").write_text('categorical = ["a"]\n[label]\ncolumn = "y"\npositive = ["1"]\n')
    schema = load_schema(tmp_path / "s.toml")
    (tmp_path / "in.csv").write_text("a,y\n" + "".join(f"v{i},1\n" for i in range(20000)))
    source = CsvSource(tmp_path / "in.csv", schema, schema.input_columns, block_bytes=1 << 12, readahead_blocks=2)
    source.start()
    source.start()  # idempotent: one reader
    assert len([t for t in threading.enumerate() if t.name == "csv-reader"]) == 1
    source.close()  # the reader was blocked on a full queue: it must still end
    assert not [t for t in threading.enumerate() if t.name == "csv-reader"]
    assert sum(c.num_rows for c in source) == 20000  # a closed source can still be read from the start


def test_values_that_are_not_utf8_reject_their_rows_only(tmp_path):
    """A Latin-1 byte anywhere (a category, a number, the label) rejects that row with its line
    number; a valid non-ASCII value hashes as the record path hashes the same string."""
    (tmp_path / "s.toml").write_text(SCHEMA)
    schema = load_schema(tmp_path / "s.toml")
    data = tmp_path / "in.csv"
    data.write_bytes(b"red,5,yes\n" b"caf\xe9,5,no\n" b"gr\xc3\xbcn,7,no\n" b"red,5\xb2,yes\n" b"blue,3,n\xf6\n"
                     b"blue,12,yes\n")
    pub = FakePublisher()
    hasher = make_hasher(schema, KEY)
    svc = ProducerService(ProducerSettings(), hasher, open_source(str(data), schema, schema.input_columns),
                          pub, ProducerMetrics())  # type: ignore[arg-type]
    report = svc.run()
    assert sorted((line, col, reason) for line, col, reason in report.bad_rows) == [
        (2, "column color", "invalid_utf8"), (4, "column size", "invalid_utf8"), (5, "column y", "invalid_utf8")]
    frames = [decode(f, Kind.TRAIN) for f in pub.frames]
    assert np.concatenate([f.labels for f in frames]).tolist() == [1, 0, 1]  # lines 1, 3, 6
    rows = [f.indices[f.offsets[i]:f.offsets[i + 1]].tolist() for f in frames for i in range(f.n_records)]
    label, want, _ = make_hasher(schema, KEY).record({"color": "grün", "size": "7", "y": "no"})
    assert label == 0 and sorted(rows[1]) == sorted(want)
