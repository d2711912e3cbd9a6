"""Rebuild ``benchmarks/RESULTS.md`` and ``benchmarks/plots/*.png`` from ``benchmarks/results/*.json`` alone.

Parts written by other engineers (producer, trainer, scorer) are read through a small convention:
``figures["headline"]`` maps a metric name (see ``GOALS``) to a number. When a part does not
follow it, the report searches the part's figures for a matching key path and prints the path it
used, so a wrong guess is visible rather than silent.
"""
from __future__ import annotations

import datetime as _dt
import re
from typing import Any

from benchmarks import compare
from benchmarks.common import BENCH_DIR, PLOTS_DIR, flatten, read_results

RESULTS_MD = BENCH_DIR / "RESULTS.md"

VW_BEST = -1.0  # goal marker: ahead of Vowpal Wabbit's best figure of the same run (issue 6)
# metric -> (part, goal, higher is better, unit, label, key paths the part is known to write
# (the best of those present is taken), then regexes searched when none is present)
GOALS: dict[str, tuple[str, float, bool, str, str, tuple[str, ...], tuple[str, ...]]] = {
    "producer_columnar_rec_s": ("producer", 1e6, True, "rec/s", "producer, columnar API, to Kafka",
                                ("columnar_end_to_end_records_per_s.median",
                                 "columnar_end_to_end_threads_records_per_s.median",
                                 "columnar_end_to_end_no_compression_records_per_s.median"),
                                (r"columnar.*(rate|rec|per_s)",)),
    "producer_record_rec_s": ("producer", 2e5, True, "rec/s", "producer, record API, to Kafka",
                              ("record_api_records_per_s.median", "record_api_no_compression_records_per_s.median"),
                              (r"record.*(rate|rec|per_s)",)),
    "trainer_kernel_rec_s": ("trainer", 8e6, True, "rec/s", "trainer kernel alone, one core",
                             ("kernel_one_core.rate_median",), (r"kernel.*(rate|rec|per_s)",)),
    "trainer_kafka_1_worker_rec_s": ("trainer", 0.0, True, "rec/s", "trainer via Kafka, 1 worker",
                                     ("trainer_1_workers.rate_median",), (r"\b1_workers?\b.*rate",)),
    "trainer_kafka_2_workers_rec_s": ("trainer", 5e6, True, "rec/s", "trainer via Kafka, 2 workers",
                                      ("trainer_2_workers.rate_median",), (r"\b2_workers?\b.*rate",)),
    "pipeline_rec_s": ("pipeline", VW_BEST, True, "rec/s",
                       "whole pipeline, one-shot `hashbridge produce` (its start-up counted; CSV -> producer -> Kafka "
                       "-> trainer, 2 workers)",
                       ("pipeline.rate_median",), (r"pipeline.*(rate|rec|per_s)",)),
    "pipeline_watch_rec_s": ("pipeline", VW_BEST, True, "rec/s",
                             "whole pipeline, producer as a running service (`produce --watch`: CSV lands -> "
                             "trained model)", ("pipeline_watch.rate_median",), (r"pipeline_watch.*rate",)),
    "scorer_bulk_pred_s": ("scorer", 5e6, True, "pred/s", "scorer bulk predictions, from a topic",
                           ("bulk_from_topic_predictions_per_s.median",), (r"bulk.*(rate|pred|per_s)",)),
    "scorer_p99_ms_at_1000_rps": ("scorer", 20.0, False, "ms", "scorer p99 latency at 1,000 req/s",
                                  ("latency.1000/s.p99_ms.median",), (r"p99.*median", r"p99")),
}


def metric(results: dict, name: str) -> tuple[float | None, str]:
    """A headline number and where it came from (``headline``, a known path, or a searched path)."""
    part, _, higher, _, _, paths, patterns = GOALS[name]
    fig = results.get(part, {}).get("figures", {})
    head = fig.get("headline", {})
    if isinstance(head, dict) and isinstance(head.get(name), (int, float)):
        return float(head[name]), f"{part}.headline.{name}"
    flat = flatten(fig)
    known = [(flat[p], p) for p in paths if p in flat]
    if known:
        value, path = (max if higher else min)(known)
        return value, f"{part}: {path}"
    for pat in patterns:
        for path, value in flat.items():
            if re.search(pat, path.lower()) and not re.search(r"(min|max|all|wall|seconds|cpu)\b", path.lower()):
                return value, f"{part}: {path} (searched)"
    return None, f"{part}: not reported" if part in results else f"{part}: no results file"


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "NO"
    if isinstance(x, (int, float)):
        if abs(x) >= 1000:
            return f"{x:,.0f}"
        return f"{x:.{digits}f}" if isinstance(x, float) else str(x)
    return str(x)


def _goal(x: float) -> str:
    return f"{x:,.0f}" if x >= 1000 else f"{x:g}"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    out += ["| " + " | ".join(_fmt(c) if not isinstance(c, str) else c for c in r) + " |" for r in rows]
    return out + [""]


def _paired(results: dict, part: str, name: str) -> tuple[float | None, float | None, str]:
    """The median ratio to VW's best pass of the same repetitions (``NAME`` minus ``_rec_s`` plus
    ``_vw_paired_ratio`` in the part's headline), that VW median, and in how many repetitions the
    run was ahead (e.g. ``"1 of 5"``, empty if not recorded), when the part measured them."""
    fig = results.get(part, {}).get("figures", {})
    base = name.removesuffix("_rec_s")
    paired = fig.get("headline", {}).get(base + "_vw_paired_ratio")
    vw = fig.get("vw_same_reps", {}).get("best", {}).get("median")
    if not (isinstance(paired, (int, float)) and vw):
        return None, None, ""
    q = fig.get(base, {}).get("ratio_to_vw_same_rep", {})  # the part's figures of that mode
    ahead = f"{q['ahead']} of {q['pairs']}" if "ahead" in q and "pairs" in q else ""
    return float(paired), float(vw), ahead


# --- sections -----------------------------------------------------------------------------------

def _headline(results: dict) -> list[str]:
    h2h = results.get("headtohead", {}).get("figures", {})
    vw = h2h.get("vw_best", {})
    vw_rate = vw.get("rate")
    lines = ["## Headline", "",
             f"Vowpal Wabbit's best single-machine figure on the synthetic set: "
             f"**{_fmt(vw_rate)} rec/s** ({vw.get('name', 'not measured')}, one pass, 2^{h2h.get('bits', '?')} bits).", ""]
    rows = []
    harness = results.get("harness", {}).get("figures", {}).get("parts", {})
    for name, (part, goal, higher, unit, label, _, _) in GOALS.items():
        value, source = metric(results, name)
        if value is not None and harness.get(part, {}).get("status", "ok") != "ok":
            source += f" (**not from the last harness run**, which {harness[part]['status']}; file of {results[part].get('date')})"
        ratio = value / vw_rate if (value and vw_rate and unit == "rec/s") else None
        ratio_s = f"{ratio:.2f}x" if ratio else "–"
        ahead_of_vw = goal == VW_BEST
        if ahead_of_vw:
            goal = vw_rate or 0.0
        paired, vw_paired, ahead = _paired(results, part, name) if ahead_of_vw else (None, None, "")
        if paired is not None and vw_paired:
            # VW measured in the same repetitions: the verdict is the paired ratio's (issue 6)
            extra = [f"ahead in {ahead} repetitions"] if ahead else []
            extra += [f"{ratio:.2f}x vs head-to-head"] if ratio else []
            ratio_s = f"{paired:.2f}x paired" + (f" ({'; '.join(extra)})" if extra else "")
            goal_s = f"> VW best of the same repetitions ({_goal(vw_paired)} {unit} median)"
            verdict = "met" if paired > 1 else f"**NOT REACHED** (paired ratio {paired:.2f}x < 1)"
        else:
            if not goal:
                verdict = "**NOT MEASURED** (no VW figure)" if ahead_of_vw else "no goal"
            elif value is None:
                verdict = "**NOT MEASURED**"
            elif (value >= goal) if higher else (value < goal):
                verdict = "met"
            else:
                verdict = f"**NOT REACHED** ({_fmt(value)} {'<' if higher else '>='} {_goal(goal)})"
            goal_s = "–" if not goal else f"{'>=' if higher else '<'} {_goal(goal)} {unit}"
            if ahead_of_vw and goal:
                goal_s = f"> VW best ({_goal(goal)} {unit})"
        rows.append([label, f"{_fmt(value)} {unit}" if value is not None else "–", ratio_s, goal_s, verdict, source])
    prod, _ = metric(results, "producer_columnar_rec_s")
    train2, _ = metric(results, "trainer_kafka_2_workers_rec_s")
    if prod and train2 and metric(results, "pipeline_rec_s")[0] is None:
        bound = min(prod, train2)
        rows.append(["whole pipeline, upper bound (derived: the slower of producer columnar and trainer "
                     "2 workers, stages running concurrently)", f"{_fmt(bound)} rec/s",
                     f"{bound / vw_rate:.2f}x" if vw_rate else "–", "–", "not measured end to end", "derived"])
    c = h2h.get("contenders", {})
    for key, label in (("hashbridge-kernel", "trainer kernel alone, one core (head-to-head)"),
                       ("hashbridge-hash+kernel", "producer columnar hashing (CSV -> CSR) + kernel, one core, no Kafka (head-to-head)")):
        if c.get(key, {}).get("rate"):
            r = c[key]["rate"]["median"]
            goal = 8e6 if key == "hashbridge-kernel" else 0
            verdict = "no goal" if not goal else ("met" if r >= goal else f"**NOT REACHED** ({_fmt(r)} < {_fmt(goal)})")
            rows.append([label, f"{_fmt(r)} rec/s", f"{c[key]['ratio_to_vw'].get('median', 0):.2f}x vs VW default",
                         f">= {_fmt(goal)} rec/s" if goal else "–", verdict, "headtohead"])
    lines += _table(["measure", "hashbridge", "ratio to VW best", "goal", "verdict", "source"], rows)
    lines.append("Ratios are against VW on the head-to-head's synthetic set (20 categorical fields); a "
                 "\"paired\" ratio divides each run by VW's best pass timed in the same repetition of that "
                 "part (the host's speed moves from minute to minute), and decides the verdict. The "
                 "other parts generate their own data of the same shape; what each used:")
    lines.append("")
    for part in ("producer", "trainer", "pipeline", "scorer"):
        fig = results.get(part, {}).get("figures", {})
        shape = {k: fig[k] for k in ("rows", "records", "fields", "features", "indices_per_record", "bits")
                 if isinstance(fig.get(k), (int, float))}
        if shape:
            lines.append(f"- {part}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in shape.items()))
    return lines + [""]


def _headtohead(results: dict) -> list[str]:
    fig = results.get("headtohead", {}).get("figures")
    if not fig:
        return ["## Head-to-head", "", "Not run.", ""]
    lines = ["## Head-to-head (one pass, same data, interleaved)", "",
             f"{fig['n_train']:,} training rows, 2^{fig['bits']} buckets, {fig['repeats']} repetitions; "
             f"best possible test AUC **{fig['best_auc']:.4f}** (logloss {fig['best_logloss']:.4f}).", ""]
    rows = []
    for name, e in fig["contenders"].items():
        if not e.get("rate"):
            rows.append([name, "–", "error: " + "; ".join(e.get("errors", ["no runs"]))[:120], "–", "–", "–", "–", "–", "–"])
            continue
        r, q = e["rate"], e.get("ratio_to_vw", {})
        rows.append([name, e["records"], f"{_fmt(r['median'])} ({_fmt(r['min'])}–{_fmt(r['max'])})",
                     f"{q.get('median', 0):.2f} ({q.get('min', 0):.2f}–{q.get('max', 0):.2f})" if q else "–",
                     e.get("auc"), e.get("logloss"), f"{e.get('cpu_seconds', 0):.2f}",
                     f"{e.get('cpu_us_per_record', 0):.2f}", f"{e.get('peak_rss_mib', 0):.0f}"])
    lines += _table(["contender", "records", "rec/s median (min–max)", "ratio to VW default", "test AUC",
                     "test logloss", "CPU s", "CPU µs/rec", "peak MiB"], rows)
    lines += [f"- `{n}`: {e['description']}" for n, e in fig["contenders"].items()]
    return lines + ["", "![throughput by contender](plots/throughput_by_contender.png)", ""]


def _accuracy(results: dict) -> list[str]:
    fig = results.get("accuracy", {}).get("figures")
    if not fig:
        return ["## Accuracy against hash bits", "", "Not run.", ""]
    lines = ["## Accuracy against hash bits", "",
             f"One pass of AdaGrad (lr {fig['lr']}, {fig['kernel']}).", ""]
    for ds in ("adult", "synthetic"):
        res = fig.get(ds)
        if not res:
            continue
        ex = res["exact_same_learner"]
        lines += [f"### {ds.capitalize()}", "",
                  f"{res['n_train']:,} train / {res['n_test']:,} test rows, {res['fields']} fields, "
                  f"{res['one_hot_width'] - 1:,} distinct (field, value) pairs in training.",
                  f"- exact one-hot, same learner: AUC **{ex['auc']:.4f}**, logloss {ex['logloss']:.4f}"]
        if "exact_sklearn_lr" in res:
            sk = res["exact_sklearn_lr"]
            lines.append(f"- exact one-hot, scikit-learn LogisticRegression (converged): AUC {sk['auc']:.4f}, "
                         f"logloss {sk['logloss']:.4f}")
        if "best_auc" in res:
            lines.append(f"- generator's best possible: AUC **{res['best_auc']:.4f}**, logloss {res['best_logloss']:.4f}")
        ch = res.get("checks", {})
        if "auc_gap_at_2^20" in ch:
            lines.append(f"- AUC at 2^20 minus exact: {ch['auc_gap_at_2^20']:+.5f} "
                         f"({'within' if ch['within_0.002_at_2^20'] else '**NOT within**'} 0.002)")
        lines.append(f"- fewest bits within 0.002 of exact: 2^{ch.get('fewest_bits_within_0.002')}; "
                     f"bits costing more: {ch.get('bits_that_cost_more_than_0.002') or 'none'}")
        outside = ch.get("mmh3_outside_noise_at_bits") or []
        lines.append(f"- mmh3 within noise of keyed BLAKE2b at every bit count: "
                     f"{'yes' if ch.get('mmh3_within_noise') else '**NO**'}"
                     + (f" (outside at 2^{', 2^'.join(map(str, outside))})" if outside else ""))
        lines.append("")
        rows = [[f"2^{r['bits']}", r["auc"], r["logloss"], f"{r['auc_key_sd']:.5f}", r["signed"]["auc"], r["mmh3"]["auc"],
                 f"{r['mmh3_minus_blake2b']:+.5f}", r.get("pairs_sharing_a_bucket")] for r in res["curve"]]
        lines += _table(["buckets", "AUC (BLAKE2b, mean over keys)", "logloss", "AUC sd over keys", "AUC signed",
                         "AUC mmh3", "mmh3 − BLAKE2b", "training pairs sharing a bucket"], rows)
    return lines + ["![AUC against bits](plots/auc_vs_bits.png)", ""]


def _others(results: dict) -> list[str]:
    lines = ["## Other parts (as reported by their benchmarks)", ""]
    extra = sorted(set(results) - {"producer", "trainer", "pipeline", "scorer", "headtohead", "accuracy", "harness"})
    for part in ("producer", "trainer", "pipeline", "scorer", *extra):
        doc = results.get(part)
        if not doc:
            lines += [f"### {part}", "", "No results file.", ""]
            continue
        flat = flatten(doc.get("figures", {}))
        lines += [f"### {part} ({doc.get('date', '?')})", ""]
        lines += _table(["figure", "value"], [[k, v] for k, v in list(flat.items())[:60]])
    return lines


def _machine(results: dict) -> list[str]:
    docs = list(results.values())
    m = docs[0].get("machine", {}) if docs else {}
    lines = ["## Machine and versions", ""]
    lines += [f"- {k}: {v}" for k, v in m.items()]
    broker = results.get("harness", {}).get("figures", {}).get("broker")
    if broker:
        lines.append(f"- Kafka parts ran through: {broker}")
    parts = results.get("harness", {}).get("figures", {}).get("parts", {})
    if parts:
        lines += ["", "Parts in the last runs:", ""]
        lines += _table(["part", "status", "seconds", "quick", "CPU stolen by the host", "results file written"],
                        [[p, s["status"], f"{s['seconds']:.0f}", "yes" if s.get("quick") else "no",
                          "–" if s.get("host_steal_share") is None else f"{s['host_steal_share']:.1%}",
                          results.get(p, {}).get("date", "none")] for p, s in parts.items()])
        lines.append("CPU stolen: the share of this VM's CPU time, while the part ran, in which its vCPUs were "
                     "ready but the hypervisor ran other work (`/proc/stat` steal); figures of a part with a "
                     "high share are low for reasons outside hashbridge.")
        stale = [p for p, s in parts.items() if s["status"] != "ok" and p in results]
        if stale:
            lines.append(f"Parts that did not finish in the last run ({', '.join(stale)}) are reported from "
                         "their previous results file (date above).")
    lines += ["", "## Notes", ""]
    for name, doc in results.items():
        lines += [f"- **{name}** ({doc.get('date', '?')}): {n}" for n in doc.get("notes", [])]
    return lines + [""]


# --- plots --------------------------------------------------------------------------------------

def _plots(results: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    PLOTS_DIR.mkdir(parents=True, exist_ok=True)
    made = []
    c = results.get("headtohead", {}).get("figures", {}).get("contenders", {})
    named = [(n, e["rate"]) for n, e in c.items() if e.get("rate")]
    if named:
        fig, ax = plt.subplots(figsize=(8, 0.45 * len(named) + 1.2))
        ys = range(len(named))
        med = [r["median"] for _, r in named]
        err = [[m - r["min"] for m, (_, r) in zip(med, named)], [r["max"] - m for m, (_, r) in zip(med, named)]]
        ax.barh(list(ys), med, xerr=err, color=["C1" if n.startswith("hashbridge") else "C0" for n, _ in named])
        ax.set_yticks(list(ys), [n for n, _ in named])
        ax.set_xscale("log")
        ax.set_xlabel("records per second (median; bars min–max)")
        ax.set_title("One pass over the synthetic set")
        fig.tight_layout()
        fig.savefig(PLOTS_DIR / "throughput_by_contender.png", dpi=110)
        plt.close(fig)
        made.append("throughput_by_contender.png")
    acc = results.get("accuracy", {}).get("figures", {})
    sets = [d for d in ("adult", "synthetic") if d in acc]
    if sets:
        fig, axes = plt.subplots(1, len(sets), figsize=(6 * len(sets), 4), squeeze=False)
        for ax, ds in zip(axes[0], sets):
            res = acc[ds]
            bits = [r["bits"] for r in res["curve"]]
            ax.plot(bits, [r["auc"] for r in res["curve"]], "o-", label="keyed BLAKE2b")
            ax.plot(bits, [r["signed"]["auc"] for r in res["curve"]], "s--", label="BLAKE2b signed")
            ax.plot(bits, [r["mmh3"]["auc"] for r in res["curve"]], "x:", label="mmh3 (public)")
            ax.axhline(res["exact_same_learner"]["auc"], color="k", lw=1, label="exact one-hot, same learner")
            if "best_auc" in res:
                ax.axhline(res["best_auc"], color="g", lw=1, ls="--", label="best possible (generator)")
            ax.set_xlabel("hash bits (buckets = 2^bits)")
            ax.set_ylabel("test AUC")
            ax.set_title(ds)
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(PLOTS_DIR / "auc_vs_bits.png", dpi=110)
        plt.close(fig)
        made.append("auc_vs_bits.png")
    points = []
    for w in (1, 2):
        v, _ = metric(results, "trainer_kafka_1_worker_rec_s" if w == 1 else "trainer_kafka_2_workers_rec_s")
        if v:
            points.append((w, v))
    tfig = results.get("trainer", {}).get("figures", {})
    found = sorted((int(m.group(1)), float(v["rate_median"])) for k, v in tfig.items()
                   if (m := re.fullmatch(r"trainer_(\d+)_workers", k)) and isinstance(v, dict) and "rate_median" in v)
    points = found or points
    tw = tfig.get("throughput_by_workers")
    if isinstance(tw, list) and tw:
        points = [(int(p["workers"]), float(p["rate"])) for p in tw if "workers" in p and "rate" in p]
    if points:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot([p[0] for p in points], [p[1] for p in points], "o-", label="hashbridge trainer via Kafka")
        pipe, _ = metric(results, "pipeline_rec_s")
        if pipe:
            workers = results.get("pipeline", {}).get("figures", {}).get("workers", 2)
            ax.plot([workers], [pipe], "s", color="C1", label="whole pipeline, CSV -> trained model")
            warm, _ = metric(results, "pipeline_watch_rec_s")
            if warm:
                ax.plot([workers], [warm], "D", color="C2", label="whole pipeline, producer running (--watch)")
        vw = results.get("headtohead", {}).get("figures", {}).get("vw_best", {})
        if vw.get("rate"):
            ax.axhline(vw["rate"], color="C0", ls="--", label=f"VW best ({vw['name']})")
        ax.set_xlabel("workers")
        ax.set_ylabel("records per second")
        ax.set_xticks([p[0] for p in points])
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(PLOTS_DIR / "throughput_vs_workers.png", dpi=110)
        plt.close(fig)
        made.append("throughput_vs_workers.png")
    return made


def build() -> str:
    """Write RESULTS.md and the plots; returns the path written."""
    results = read_results()
    made = _plots(results)
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    lines = ["# hashbridge benchmark results", "",
             f"Generated {now} by `python -m benchmarks report` from `benchmarks/results/*.json` "
             "(regenerate with `make bench`; see docs/benchmarks.md).", ""]
    lines += _headline(results) + _headtohead(results) + _accuracy(results)
    if "throughput_vs_workers.png" in made:
        lines += ["## Throughput against workers", "", "![throughput vs workers](plots/throughput_vs_workers.png)", ""]
    previous = read_results(compare.PREVIOUS_DIR)
    if previous:
        lines += compare.section(compare.compare(previous, results), "`results/previous/` (the files the last run "
                                 "replaced)", "`results/`", "## Run to run: the last run against the one before")
    lines += _others(results) + _machine(results)
    RESULTS_MD.write_text("\n".join(lines))
    return str(RESULTS_MD)


if __name__ == "__main__":
    print(build())
