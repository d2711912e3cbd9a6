"""Run to run: two sets of result files side by side, so "running it twice gives the same AUCs and
throughputs within noise" is shown by the files, not claimed.

``python -m benchmarks.compare [BEFORE_DIR] [AFTER_DIR]`` (defaults ``benchmarks/results/previous``
and ``benchmarks/results``) prints the comparison; the harness keeps the files a part replaces in
``results/previous/``, and the report adds this comparison to RESULTS.md.

Two rules, both mechanical:

* **Accuracy** (every AUC and logloss a part reports): the single-threaded parts are deterministic
  (fixed seeds, fixed keys, in-order passes), so their figures must be *equal* (|diff| <= 1e-9).
  The pipeline learns with two Hogwild workers, whose races differ from run to run; its figures
  must stay within 0.002, the accuracy standard of issue 6. Anything else is a change, and the
  command exits 1.
* **Speed** (every figure a part reports as median, min and max over its repetitions): *within
  noise* when the two runs' min-max ranges overlap, else *moved*, with the ratio of the medians.
  A moved figure is reported, never an error: the host is shared, and the steal share of each run
  is printed beside it.

Runs of different data (rows, records, bits, or a ``--quick`` run against a full one) are not
compared: the part is listed as not comparable and why.
"""
from __future__ import annotations

import argparse
import re
import shutil
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from benchmarks import common
from benchmarks.common import RESULTS_DIR, flatten, read_results

PREVIOUS_DIR = RESULTS_DIR / "previous"
EXACT, HOGWILD_TOLERANCE = 1e-9, 0.002
TOLERANCE = {"pipeline": HOGWILD_TOLERANCE}  # parts whose accuracy is not deterministic
SHAPE_KEYS = ("rows", "records", "n_train", "bits", "fields", "features", "indices_per_record", "repeats")
_SPREAD = re.compile(r"(.*?)([._])median$")
_SKIP = re.compile(r"ratio_to_vw|seconds|cpu_rate|auc|logloss|\[\d+\]")
_ACCURACY = re.compile(r"(^|[._])(auc|logloss)([._]|$)")


@dataclass(frozen=True)
class Speed:
    part: str
    figure: str
    before: tuple[float, float, float]  # median, min, max
    after: tuple[float, float, float]

    @property
    def ratio(self) -> float:
        return self.after[0] / self.before[0] if self.before[0] else float("nan")

    @property
    def within_noise(self) -> bool:
        return self.before[1] <= self.after[2] and self.after[1] <= self.before[2]


@dataclass(frozen=True)
class Accuracy:
    part: str
    compared: int
    max_abs_diff: float
    worst: str  # the figure with the largest difference
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance


@dataclass(frozen=True)
class Comparison:
    speeds: list[Speed]
    accuracy: list[Accuracy]
    skipped: dict[str, str]  # part -> why it was not compared
    dates: dict[str, tuple[str, str]]
    steal: dict[str, tuple[float | None, float | None]]

    @property
    def accuracy_ok(self) -> bool:
        return all(a.ok for a in self.accuracy)


def spreads(figures: dict) -> dict[str, tuple[float, float, float]]:
    """Figures reported as median/min/max over repetitions, by the median's path (speed only)."""
    flat = flatten(figures)
    out = {}
    for key, med in flat.items():
        m = _SPREAD.match(key)
        if not m or _SKIP.search(key):
            continue
        lo, hi = flat.get(f"{m.group(1)}{m.group(2)}min"), flat.get(f"{m.group(1)}{m.group(2)}max")
        if lo is not None and hi is not None:
            out[key] = (med, lo, hi)
    return out


def _not_comparable(a: dict, b: dict, quick: tuple[bool, bool]) -> str | None:
    if quick[0] != quick[1]:
        return "one run was --quick"
    fa, fb = a.get("figures", {}), b.get("figures", {})
    diff = [f"{k} {fa[k]} vs {fb[k]}" for k in SHAPE_KEYS if k in fa and k in fb and fa[k] != fb[k]]
    if diff:
        return "different data: " + ", ".join(diff)
    if a.get("date") == b.get("date"):
        return f"the same file (not rerun since {a.get('date')})"
    return None


def _harness_part(results: dict, part: str) -> dict:
    return results.get("harness", {}).get("figures", {}).get("parts", {}).get(part, {})


def compare(before: dict[str, dict], after: dict[str, dict]) -> Comparison:
    speeds: list[Speed] = []
    accuracy: list[Accuracy] = []
    skipped: dict[str, str] = {}
    dates, steal = {}, {}
    for part in sorted((set(before) & set(after)) - {"harness"}):
        a, b = before[part], after[part]
        hb, ha = _harness_part(before, part), _harness_part(after, part)
        why = _not_comparable(a, b, (bool(hb.get("quick")), bool(ha.get("quick"))))
        if why:
            skipped[part] = why
            continue
        dates[part] = (str(a.get("date", "?")), str(b.get("date", "?")))
        steal[part] = (hb.get("host_steal_share"), ha.get("host_steal_share"))
        sa, sb = spreads(a.get("figures", {})), spreads(b.get("figures", {}))
        speeds += [Speed(part, k, sa[k], sb[k]) for k in sorted(set(sa) & set(sb))]
        fa, fb = flatten(a.get("figures", {})), flatten(b.get("figures", {}))
        keys = [k for k in fa if k in fb and _ACCURACY.search(k.lower())]
        if keys:
            worst = max(keys, key=lambda k: abs(fa[k] - fb[k]))
            accuracy.append(Accuracy(part, len(keys), abs(fa[worst] - fb[worst]), worst,
                                     TOLERANCE.get(part, EXACT)))
    for part in sorted(set(before) ^ set(after)):
        if part != "harness":
            skipped[part] = "only in the " + ("previous" if part in before else "last") + " run"
    return Comparison(speeds, accuracy, skipped, dates, steal)


def keep_previous(names: list[str]) -> None:
    """Copy each named result file into ``results/previous/`` before its part runs again, so the
    report can set the new figures beside the last ones (:func:`compare`). A part that
    then fails leaves its file as it was, and the comparison says the part was not rerun."""
    PREVIOUS_DIR.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = common.RESULTS_DIR / f"{name}.json"
        if path.exists():
            shutil.copy2(path, PREVIOUS_DIR / path.name)


def _num(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.4g}"


def _share(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def section(c: Comparison, before: str, after: str, title: str) -> list[str]:
    """Markdown: the accuracy verdicts, a summary of the speeds, and the table of every figure."""
    lines = [title, "",
             f"Made by `python -m benchmarks.compare` from {before} and {after}. AUC and logloss of deterministic parts must be equal, the 2-worker pipeline's within "
             f"{HOGWILD_TOLERANCE}; a speed is *within noise* when the two runs' min-max ranges over their "
             "repetitions overlap.", ""]
    if not c.speeds and not c.accuracy:
        return lines + ["Nothing to compare" + (": " + "; ".join(f"{p}: {w}" for p, w in c.skipped.items())
                                                if c.skipped else ".") + "", ""]
    for a in c.accuracy:
        kind = "equal" if a.tolerance == EXACT else f"within {a.tolerance}"
        verdict = f"{kind}: yes" if a.ok else f"**CHANGED** (must be {kind})"
        lines.append(f"- {a.part}: {a.compared} AUC/logloss figures, largest difference "
                     f"{a.max_abs_diff:.2g} (`{a.worst}`); {verdict}")
    inside = sum(s.within_noise for s in c.speeds)
    if c.speeds:
        ratios = [s.ratio for s in c.speeds]
        lines.append(f"- speed: {inside} of {len(c.speeds)} figures within noise; ratio of medians (last / "
                     f"previous) median {statistics.median(ratios):.2f}, range {min(ratios):.2f}-{max(ratios):.2f}")
    lines += [f"- not compared, {p}: {w}" for p, w in c.skipped.items()]
    lines += ["", "| part | figure | previous median (min–max) | last median (min–max) | last / previous | verdict |",
              "| --- | --- | --- | --- | --- | --- |"]
    for s in c.speeds:
        b, a = s.before, s.after
        lines.append(f"| {s.part} | {s.figure} | {_num(b[0])} ({_num(b[1])}–{_num(b[2])}) | "
                     f"{_num(a[0])} ({_num(a[1])}–{_num(a[2])}) | {s.ratio:.2f} | "
                     f"{'within noise' if s.within_noise else '**moved**'} |")
    lines += ["", "| part | previous run | last run | CPU stolen, previous / last |", "| --- | --- | --- | --- |"]
    lines += [f"| {p} | {d[0]} | {d[1]} | {_share(c.steal[p][0])} / {_share(c.steal[p][1])} |"
              for p, d in c.dates.items()]
    return lines + [""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__.splitlines()[0])
    ap.add_argument("before", nargs="?", type=Path, default=PREVIOUS_DIR)
    ap.add_argument("after", nargs="?", type=Path, default=RESULTS_DIR)
    args = ap.parse_args(argv)
    for d in (args.before, args.after):
        if not d.is_dir():
            print(f"no results directory {d}", file=sys.stderr)
            return 2
    c = compare(read_results(args.before), read_results(args.after))
    print("\n".join(section(c, f"`{args.before}`", f"`{args.after}`", f"## {args.after} against {args.before}")))
    return 0 if c.accuracy_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
