"""benchmarks.compare: the run-to-run check behind "running make bench twice gives the same AUCs
and throughputs within noise", and the harness step that keeps the previous files."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import compare


def _run(date: str, rate: tuple[float, float, float], auc: float, pipe_auc: float = 0.7655,
         rows: int = 1000, quick: bool = False) -> dict[str, dict]:
    med, lo, hi = rate
    return {
        "headtohead": {"name": "headtohead", "date": date, "figures": {
            "n_train": rows, "bits": 20,
            "contenders": {"vw": {"rate": {"median": med, "min": lo, "max": hi}, "auc": auc, "logloss": 0.5,
                                  "ratio_to_vw": {"median": 1.0, "min": 1.0, "max": 1.0}}}}},
        "pipeline": {"name": "pipeline", "date": date, "figures": {
            "rows": rows, "pipeline": {"rate": {"median": 4.0, "min": 3.0, "max": 5.0},
                                       "test_auc": {"median": pipe_auc, "min": pipe_auc, "max": pipe_auc}}}},
        "harness": {"name": "harness", "date": date, "figures": {"parts": {
            p: {"status": "ok", "quick": quick, "host_steal_share": 0.01} for p in ("headtohead", "pipeline")}}},
    }


def test_a_rerun_with_equal_accuracy_and_overlapping_ranges_is_within_noise():
    c = compare.compare(_run("d1", (100.0, 90.0, 110.0), 0.76), _run("d2", (105.0, 95.0, 120.0), 0.76, 0.7660))
    assert c.accuracy_ok and {a.part for a in c.accuracy} == {"headtohead", "pipeline"}
    vw = next(s for s in c.speeds if s.figure == "contenders.vw.rate.median")
    assert vw.within_noise and vw.ratio == pytest.approx(1.05)
    assert not any("ratio_to_vw" in s.figure or "auc" in s.figure for s in c.speeds)  # speeds only
    text = "\n".join(compare.section(c, "a", "b", "## t"))
    assert "2 of 2 figures within noise" in text and "CHANGED" not in text


def test_ranges_that_do_not_overlap_are_reported_as_moved_not_as_errors():
    c = compare.compare(_run("d1", (100.0, 90.0, 110.0), 0.76), _run("d2", (150.0, 140.0, 160.0), 0.76))
    vw = next(s for s in c.speeds if s.part == "headtohead")
    assert not vw.within_noise and vw.ratio == pytest.approx(1.5)
    assert c.accuracy_ok
    assert "**moved**" in "\n".join(compare.section(c, "a", "b", "## t"))


def test_a_deterministic_auc_must_be_equal_and_hogwild_within_its_tolerance():
    tiny = compare.compare(_run("d1", (1, 1, 1), 0.76), _run("d2", (1, 1, 1), 0.76 + 1e-6))
    assert not tiny.accuracy_ok  # single-threaded parts are deterministic: 1e-6 is a change
    hog = compare.compare(_run("d1", (1, 1, 1), 0.76, 0.7650), _run("d2", (1, 1, 1), 0.76, 0.7650 + 0.003))
    assert [a.part for a in hog.accuracy if not a.ok] == ["pipeline"]
    assert "**CHANGED**" in "\n".join(compare.section(hog, "a", "b", "## t"))


def test_different_data_a_quick_run_or_an_unchanged_file_is_not_compared():
    c = compare.compare(_run("d1", (1, 1, 1), 0.7, rows=1000), _run("d2", (1, 1, 1), 0.8, rows=2000))
    assert not c.speeds and not c.accuracy and "different data" in c.skipped["headtohead"]
    q = compare.compare(_run("d1", (1, 1, 1), 0.7), _run("d2", (1, 1, 1), 0.8, quick=True))
    assert q.skipped["pipeline"] == "one run was --quick" and q.accuracy_ok
    same = compare.compare(_run("d1", (1, 1, 1), 0.7), _run("d1", (1, 1, 1), 0.7))
    assert "not rerun" in same.skipped["headtohead"]


def _write(d: Path, results: dict[str, dict]) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for name, doc in results.items():
        (d / f"{name}.json").write_text(json.dumps(doc))


def test_the_command_exits_1_on_an_accuracy_change_and_2_without_a_directory(tmp_path, capsys):
    _write(tmp_path / "a", _run("d1", (1, 1, 1), 0.76))
    _write(tmp_path / "b", _run("d2", (1, 1, 1), 0.76))
    _write(tmp_path / "c", _run("d3", (1, 1, 1), 0.75))
    assert compare.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert compare.main([str(tmp_path / "a"), str(tmp_path / "c")]) == 1
    assert "CHANGED" in capsys.readouterr().out
    assert compare.main([str(tmp_path / "a"), str(tmp_path / "missing")]) == 2


def test_the_harness_keeps_the_file_a_part_is_about_to_replace(tmp_path, monkeypatch):
    results, previous = tmp_path / "results", tmp_path / "results" / "previous"
    _write(results, {"pipeline": {"name": "pipeline", "date": "old"}})
    monkeypatch.setattr("benchmarks.common.RESULTS_DIR", results)
    monkeypatch.setattr(compare, "PREVIOUS_DIR", previous)
    compare.keep_previous(["pipeline", "scorer"])  # scorer has no file yet: nothing to keep
    assert json.loads((previous / "pipeline.json").read_text())["date"] == "old"
    assert (results / "pipeline.json").exists() and not (previous / "scorer.json").exists()
