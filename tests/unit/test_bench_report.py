"""benchmarks.report's headline and benchmarks.pipesummary: the pipeline's verdict against Vowpal
Wabbit comes from the ratio paired by repetition when the part measured VW itself, else from the
head-to-head's VW figure."""
from __future__ import annotations

from benchmarks import pipesummary, report
from benchmarks.vwpaired import paired_ratios


def _results(watch_rate: float, h2h_vw: float, paired: float | None, vw_same: float | None) -> dict:
    pipe: dict = {"headline": {"pipeline_watch_rec_s": watch_rate}}
    if paired is not None:
        pipe["headline"]["pipeline_watch_vw_paired_ratio"] = paired
        pipe["vw_same_reps"] = {"best": {"median": vw_same, "min": vw_same, "max": vw_same}}
        pipe["pipeline_watch"] = {"ratio_to_vw_same_rep": {"median": paired, "pairs": 5, "ahead": int(paired > 1) * 3}}
    return {"headtohead": {"figures": {"bits": 20, "vw_best": {"name": "vw-cache-sgd", "rate": h2h_vw}}},
            "pipeline": {"figures": pipe}}


def _watch_row(results: dict) -> str:
    rows = [ln for ln in report._headline(results) if "produce --watch" in ln]
    assert len(rows) == 1
    return rows[0]


def test_a_paired_ratio_below_one_is_not_reached_even_above_the_head_to_head_figure():
    row = _watch_row(_results(900_000, 800_000, 0.85, 1_050_000))
    assert "0.85x paired (ahead in 0 of 5 repetitions; 1.12x vs head-to-head)" in row
    assert "**NOT REACHED** (paired ratio 0.85x < 1)" in row
    assert "same repetitions (1,050,000 rec/s median)" in row


def test_a_paired_ratio_above_one_is_met():
    row = _watch_row(_results(900_000, 1_000_000, 1.08, 830_000))
    assert "1.08x paired (ahead in 3 of 5 repetitions; 0.90x vs head-to-head)" in row
    assert "| met |" in row


def test_without_paired_figures_the_head_to_head_vw_decides():
    assert "**NOT REACHED** (900,000 < 1,000,000)" in _watch_row(_results(900_000, 1_000_000, None, None))
    assert "| met |" in _watch_row(_results(1_100_000, 1_000_000, None, None))


def _run(mode: str, rate: float, vw: float | None) -> dict:
    return {"mode": mode, "rate": rate, "seconds": 1.0, "producer_seconds": 0.9, "producer_rate": rate,
            "trainer_lag_seconds": 0.1, "trainer_ready_seconds": 2.0, "producer_reported_rate": rate,
            "final_trigger": "end", "vw_best_same_rep": vw}


def test_summarise_divides_each_run_by_the_vw_of_its_own_repetition():
    runs = [_run("watch", 800.0, 1000.0), _run("watch", 900.0, 600.0), _run("watch", 700.0, None),
            _run("cold", 400.0, 1000.0)]
    assert paired_ratios(runs[:3]) == [0.8, 1.5]  # the unpaired run is left out, not divided by 0
    figures = {"partitions": 4, "workers": 2, "bits": 20, "snapshot_idle_seconds": 0.1}
    vw_reps = [{"vw-cache-sgd": 1000.0, "best": 1000.0}, {"vw-cache-sgd": 600.0, "best": 600.0}]
    notes = pipesummary.summarise(figures, runs, vw_reps, 900, 1000, 0.8)
    q = figures["pipeline_watch"]["ratio_to_vw_same_rep"]
    assert (q["median"], q["min"], q["max"], q["pairs"], q["ahead"]) == (1.15, 0.8, 1.5, 2, 1)
    assert figures["headline"]["pipeline_watch_vw_paired_ratio"] == 1.15
    assert figures["headline"]["pipeline_vw_paired_ratio"] == 0.4
    assert figures["headline"]["pipeline_watch_vw_paired_ahead_share"] == 0.5
    assert figures["vw_same_reps"]["best"]["median"] == 800.0
    assert any("[watch] paired ratio to VW's best: median 1.15x" in n and "ahead in 1 of them): ahead" in n
               for n in notes)
    assert any("[cold] paired ratio" in n and "**behind**" in n for n in notes)
