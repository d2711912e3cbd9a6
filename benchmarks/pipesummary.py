"""Figures and notes of the pipeline bench's runs (``benchmarks.pipeline``): medians and spreads per
way of running the producer, the CPU split, and the ratio to Vowpal Wabbit paired by repetition."""
from __future__ import annotations

import os
import statistics
from collections import Counter
from typing import Any

from benchmarks.vwpaired import JOBS as VW_JOBS, paired_ratios

MODES = ("cold", "watch")
KEPT_PACE_SECONDS = 0.5  # a lag within the idle pause plus a snapshot's write: the trainer kept pace


def figure_key(mode: str) -> str:
    """Where a mode's summary goes in the part's figures (``pipeline`` for the one-shot runs)."""
    return "pipeline" if mode == "cold" else f"pipeline_{mode}"


def _spread(xs: list[float]) -> dict[str, float]:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "rate_median": statistics.median(r["rate"] for r in runs), "rate": _spread([r["rate"] for r in runs]),
        **{k: _spread([r[k] or 0.0 for r in runs]) for k in (
            "seconds", "producer_seconds", "producer_rate", "trainer_lag_seconds", "trainer_ready_seconds",
            "producer_reported_rate")}}
    ratios = paired_ratios(runs)
    if ratios:
        out["ratio_to_vw_same_rep"] = {**_spread(ratios), "pairs": len(ratios), "ahead": sum(r > 1 for r in ratios)}
    aucs = [r["auc"] for r in runs if "auc" in r]
    if aucs:
        out["test_auc"] = _spread(aucs)
    out["final_triggers"] = dict(Counter(str(r.get("final_trigger")) for r in runs))
    cpus = [r["cpu"] for r in runs if r.get("cpu")]
    if cpus:
        out["cpu_median"] = {k: statistics.median(c[k] for c in cpus) for k in cpus[0]}
    return out


def _notes(mode: str, fig: dict[str, Any], p: dict[str, Any], n: int, n_rows: int, best_auc: float, reps: int
           ) -> list[str]:
    how = ("`hashbridge produce --input` started by the clock (its interpreter start, imports, broker connection "
           "and kernel loading counted)" if mode == "cold" else
           "`hashbridge produce --watch` (started and ready before the clock, a fresh process per run; the clock "
           "starts when the CSV is renamed into its spool directory)")
    notes = [
        f"[{mode}] CSV ({n:,} training rows of the {n_rows:,}-row synthetic set, 20 categorical fields) -> {how} "
        f"(keyed BLAKE2b, frames uncompressed) -> local Kafka ({fig['partitions']} partitions) -> `hashbridge train` "
        f"({fig['workers']} workers, 2^{fig['bits']} weights, AdaGrad): median {p['rate']['median']:,.0f} records/s (min "
        f"{p['rate']['min']:,.0f}, max {p['rate']['max']:,.0f}) over {reps} repetitions, to a snapshot holding "
        f"all {n:,} records.",
        f"[{mode}] Split: the producer took {p['producer_seconds']['median']:.2f} s (median, "
        f"{p['producer_rate']['median']:,.0f} records/s, until every record was acknowledged"
        + (" and its process had exited" if mode == "cold" else " and the file moved to done/")
        + f") while the trainer learned alongside; the trainer finished {p['trainer_lag_seconds']['median']:.2f} s "
        "after it (median; 0 when the snapshot held every record first; the last snapshot's trigger, by runs: "
        + ", ".join(f"{k} {v}" for k, v in sorted(p.get("final_triggers", {}).items())) + "). The producer's own report (hashing and "
        f"publishing) says {p['producer_reported_rate']['median']:,.0f} records/s.",
    ]
    if mode == "cold":
        notes.append(
            f"The trainer is started first and the clock begins once its workers hold all {fig['partitions']} partitions "
            f"(median {p['trainer_ready_seconds']['median']:.1f} s of start-up, not counted); the end is seen "
            "through the snapshot the trainer takes once it has learned up to the producer's end-of-input markers "
            f"on every partition (else once its input has been quiet for {fig['snapshot_idle_seconds']} s), so the snapshot's "
            "write and the poll are counted as lag.")
    if "cpu_median" in p:
        c = p["cpu_median"]
        cores = (os.cpu_count() or 2) * c["span_s"]
        notes.append(
            f"[{mode}] CPU while the clock ran (medians over runs): the producer process {c['producer_cpu_s']:.2f} "
            f"CPU-s, the trainer's processes {c['trainer_cpu_s']:.2f}, the broker {c['broker_cpu_s']:.2f}, of the "
            f"{cores:.2f} core-seconds the {c['span_s']:.2f} s gave ({c['producer_cpu_s'] / cores:.0%} / "
            f"{c['trainer_cpu_s'] / cores:.0%} / {c['broker_cpu_s'] / cores:.0%}); the host was idle "
            f"{c['host_idle_share']:.0%} of the time: "
            + ("CPU-bound" if c["host_idle_share"] < 0.1 else "not CPU-bound: stages waited on each other"))
    lag, prod = p["trainer_lag_seconds"]["median"], p["producer_seconds"]["median"]
    notes.append(f"[{mode}] bottleneck: " + (
        f"the producer - the trainer kept pace, its snapshot within {KEPT_PACE_SECONDS} s of the producer's end"
        if lag <= KEPT_PACE_SECONDS else f"the trainer - it needed {lag:.2f} s after the producer's {prod:.2f} s"))
    if "test_auc" in p:
        notes.append(f"[{mode}] test AUC of the final model: {p['test_auc']['median']:.4f} (generator's best "
                     f"possible {best_auc:.4f}); the test split was hashed by the producer's columnar path with "
                     "the same schema and key and scored with scorer.scoring.predict_numpy.")
    return notes


def summarise(figures: dict[str, Any], runs: list[dict[str, Any]], vw_reps: list[dict[str, float]], n: int,
              n_rows: int, best_auc: float) -> list[str]:
    """Add each mode's summary (and the headline) to ``figures``; returns the notes."""
    notes: list[str] = []
    headline: dict[str, float] = {}
    for mode in MODES:
        mine = [r for r in runs if r["mode"] == mode]
        if mine:
            key_ = figure_key(mode)
            figures[key_] = _summary(mine)
            headline[f"{key_}_rec_s"] = figures[key_]["rate_median"]
            if "ratio_to_vw_same_rep" in figures[key_]:
                q = figures[key_]["ratio_to_vw_same_rep"]
                headline[f"{key_}_vw_paired_ratio"] = q["median"]
                headline[f"{key_}_vw_paired_ahead_share"] = q["ahead"] / q["pairs"]
            notes += _notes(mode, figures, figures[key_], n, n_rows, best_auc, len(mine))
    if vw_reps:
        best = _spread([v["best"] for v in vw_reps])
        figures["vw_same_reps"] = {"jobs": list(VW_JOBS), "per_rep": vw_reps, "best": best}
        notes.append(
            f"Vowpal Wabbit in the same repetitions ({', '.join(VW_JOBS)}: its binary cache, built untimed; each "
            f"a fresh child process, rotated with the two pipeline runs): best pass per repetition median "
            f"{best['median']:,.0f} records/s (min {best['min']:,.0f}, max {best['max']:,.0f}). Ratios below divide "
            "each pipeline run by VW's best of its own repetition (paired), so the host's minute-to-minute speed "
            "cancels out.")
        for mode in MODES:
            p = figures.get(figure_key(mode), {})
            if "ratio_to_vw_same_rep" in p:
                q = p["ratio_to_vw_same_rep"]
                notes.append(f"[{mode}] paired ratio to VW's best: median {q['median']:.2f}x (min {q['min']:.2f}x, "
                             f"max {q['max']:.2f}x over {q['pairs']} repetitions, ahead in {q['ahead']} of them): "
                             + ("ahead" if q["median"] > 1 else "**behind**"))
    if headline:
        figures["headline"] = headline
    return notes
