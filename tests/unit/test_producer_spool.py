"""The spool loop of ``hashbridge produce --watch``: which files it takes, in what order, and where
each one ends (done/, failed/ with its reason, or left in place after a stop)."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest

from producer.metrics import ProducerMetrics
from producer.service import RunReport
from producer.spool import DONE, FAILED, SpoolService, move, pending
from shared.errors import HashbridgeError, RecordError


def _touch(d: Path, *names: str) -> None:
    for n in names:
        (d / n).write_text("a,y\n1,1\n")


def test_pending_takes_known_suffixes_in_name_order_and_skips_hidden_files(tmp_path):
    _touch(tmp_path, "b.csv", "a.parquet", "c.JSONL", ".d.csv", "_e.csv", "f.txt", "g.csv.tmp")
    (tmp_path / "h.csv").mkdir()
    assert [p.name for p in pending(tmp_path)] == ["a.parquet", "b.csv", "c.JSONL"]


def test_move_never_overwrites_an_earlier_file_of_that_name(tmp_path):
    _touch(tmp_path, "a.csv")
    first = move(tmp_path / "a.csv", DONE)
    _touch(tmp_path, "a.csv")
    second = move(tmp_path / "a.csv", DONE)
    assert first != second and first.exists() and second.exists() and second.suffix == ".csv"


def _report(acked: int, errors: int = 0, stopped: bool = False) -> RunReport:
    return RunReport(records_read=acked, records_acked=acked, frames=1, delivery_errors=errors, stopped=stopped)


def test_files_end_in_done_or_failed_with_the_reason(tmp_path):
    _touch(tmp_path, "1.csv", "2.csv", "3.csv")
    seen: list[str] = []

    waiting: list[float] = []

    def publish(path: Path) -> RunReport:
        seen.append(path.name)
        waiting.append(metrics.registry.get_sample_value("hb_producer_spool_pending_files"))
        if path.name == "2.csv":
            raise RecordError("line 3: bad_label (column y)", "bad_label")
        return _report(10, errors=1 if path.name == "3.csv" else 0)

    metrics = ProducerMetrics()
    report = SpoolService(tmp_path, publish, metrics, poll_seconds=0.01).run(idle_exit=0.05)
    assert seen == ["1.csv", "2.csv", "3.csv"] and waiting == [3, 2, 1]
    assert (tmp_path / DONE / "1.csv").exists()
    assert "bad_label" in (tmp_path / FAILED / "2.csv.error").read_text()
    assert "1 frames were not delivered" in (tmp_path / FAILED / "3.csv.error").read_text()
    assert (report.files_done, report.files_failed, report.records_acked, report.stopped) == (1, 2, 20, False)
    assert pending(tmp_path) == []
    sample = metrics.registry.get_sample_value
    assert sample("hb_producer_spool_files_total", {"outcome": "done"}) == 1
    assert sample("hb_producer_spool_files_total", {"outcome": "failed"}) == 2
    assert sample("hb_producer_spool_pending_files") == 0


def test_a_stop_during_a_file_leaves_it_in_the_spool(tmp_path):
    _touch(tmp_path, "1.csv", "2.csv")
    spool: SpoolService

    def publish(path: Path) -> RunReport:
        spool.stop()  # as SIGTERM during the file: the service reports a stopped run
        return _report(3, stopped=True)

    spool = SpoolService(tmp_path, publish)
    report = spool.run()
    assert report.stopped and report.files_done == 0 and report.records_acked == 0
    assert [p.name for p in pending(tmp_path)] == ["1.csv", "2.csv"]


def test_stop_reaches_the_file_being_published(tmp_path):
    _touch(tmp_path, "1.csv")
    stopped = threading.Event()
    spool: SpoolService

    def publish(path: Path) -> RunReport:
        spool.on_stop = stopped.set
        threading.Timer(0.05, spool.stop).start()
        assert stopped.wait(5)
        return _report(1, stopped=True)

    spool = SpoolService(tmp_path, publish)
    spool.run()
    assert stopped.is_set()


def test_a_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(HashbridgeError, match="not a directory"):
        SpoolService(tmp_path / "nope", lambda p: _report(0))


def test_warm_up_runs_the_columnar_path_on_a_throwaway_hasher(tmp_path):
    """The Adult schema (numeric columns with edges, categoricals, a label): warm_up hashes its
    rows on a hasher of its own, so the one that publishes starts with empty value tables."""
    from producer.hashing import make_hasher
    from producer.schema import load_schema
    from producer.spool import warm_up

    schema = load_schema(Path(__file__).resolve().parents[2] / "examples" / "adult.schema.toml")
    key = bytes(range(32))
    made = []

    def make():
        made.append(make_hasher(schema, key))
        return made[-1]

    real = make_hasher(schema, key)
    warm_up(schema, make)
    assert len(made) == 1 and made[0] is not real
    assert sum(made[0].distinct().values()) > 0  # the throwaway saw the warm-up values
    assert sum(real.distinct().values()) == 0
