"""``hashbridge audit``: measure, at the data owner, what the learner's side could recover.

Runs the attacks of :mod:`producer.attacks` on a sample hashed under the schema, in both hash
modes, and writes ``audit.md`` and ``audit.json`` with a verdict and advice per field. It never
reads the owner's key: the keyed mode is measured with a fresh random key, and an attacker who
lacks the key is equally blind to any key. The report names fields and counts, never a value.
"""
from __future__ import annotations

import argparse
import itertools
import json
import logging
import secrets
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shared.errors import HashbridgeError
from shared.hashspec import Algorithm, FeatureHasher
from shared.logs import setup_logging

from producer.attacks import (FieldRecovery, IndexOf, Uniqueness, dictionary_attack, frequency_attack,
                              total, uniqueness)
from producer.edges import fit_edges
from producer.hashing import ColumnRule, LabelRule
from producer.rare import RARE_TOKEN, RareSuppressor
from producer.schema import BIN_PREFIX, CROSS_FIELD_JOIN, CROSS_VALUE_JOIN, Schema, load_schema
from producer.sources import open_source

log = logging.getLogger("producer.audit")

QUASI_IDENTIFIER_NAMES = ("age", "sex", "gender", "race", "ethnicity", "native-country", "country",
                          "marital-status", "zip", "zipcode", "postcode", "postal-code", "birthdate",
                          "date-of-birth", "dob", "birth-year")
MAX_CROSS_CANDIDATES = 1_000_000  # larger cross dictionaries are not attempted (noted in the report)
EXPOSED, WEAK, OK = "exposed", "weak", "ok"


@dataclass(slots=True)
class Sample:
    """Value strings per feature field (None: no feature), in input order."""

    fields: tuple[str, ...]
    kinds: dict[str, str]  # categorical | numeric | raw | cross
    texts: dict[str, list[str | None]]
    rows: int
    skipped: int  # rows the producer would skip (reader rejects, bad numbers, bad labels)


def load_sample(schema: Schema, path: str, max_rows: int | None = None) -> tuple[Schema, Sample]:
    """Read ``path`` as the producer would and turn every value into its value string."""
    if schema.unfitted:
        schema = fit_edges(schema, path, save=False)  # the audit writes nothing beside the schema
    rules = {c: ColumnRule(schema, c) for c in schema.categorical + tuple(n.name for n in schema.numeric)}
    label_rule = LabelRule(schema) if schema.label is not None else None
    kinds = {c: "categorical" for c in schema.categorical}
    kinds.update({n.name: "raw" if n.raw else "numeric" for n in schema.numeric})
    kinds.update({a + CROSS_FIELD_JOIN + b: "cross" for a, b in schema.crosses})
    texts: dict[str, list[str | None]] = {f: [] for f in schema.feature_fields}
    source = open_source(path, schema, schema.input_columns)
    parts: dict[str, list[np.ndarray]] = {c: [] for c in rules}
    rows = skipped = 0
    for chunk in source:
        n = chunk.num_rows if max_rows is None else min(chunk.num_rows, max_rows - rows)
        if n <= 0:
            break
        cols = {c: _column(chunk, c, n) for c in schema.input_columns}
        bad = np.zeros(n, dtype=bool)
        if label_rule is not None:
            codes, entries = cols[schema.label.column]  # type: ignore[union-attr]
            bad |= np.array([label_rule.label(e) < 0 for e in entries], dtype=bool)[codes]
        outs = {}
        for c, rule in rules.items():
            codes, entries = cols[c]
            res = [rule.outcome(e) for e in entries]
            bad |= np.array([o.error is not None for o in res], dtype=bool)[codes]
            outs[c] = np.array([o.text for o in res], dtype=object)[codes]
        keep = ~bad
        for c in rules:
            parts[c].append(outs[c][keep])
        rows += int(keep.sum())
        skipped += int(bad.sum())
    for c in rules:
        texts[c] = np.concatenate(parts[c]).tolist() if parts[c] else []
    for a, b in schema.crosses:
        texts[a + CROSS_FIELD_JOIN + b] = [None if ta is None or tb is None else ta + CROSS_VALUE_JOIN + tb
                                           for ta, tb in zip(texts[a], texts[b])]
    skipped += len(source.rejects.rows)
    return schema, Sample(schema.feature_fields, kinds, texts, rows, skipped)


def _column(chunk: Any, name: str, n: int) -> tuple[np.ndarray, list[Any]]:
    """Dictionary codes of the first ``n`` rows of a column and its entries (None last)."""
    if chunk.batch is not None:
        arr = chunk.batch.column(chunk.batch.schema.names.index(name)).slice(0, n)
        if not pa.types.is_dictionary(arr.type):
            arr = pc.dictionary_encode(arr)
        entries = arr.dictionary.to_pylist() + [None]
        codes = pc.fill_null(arr.indices, len(entries) - 1).to_numpy(zero_copy_only=False)
        return codes.astype(np.int64), entries
    values = [r.get(name) for r in (chunk.records or [])[:n]]
    index: dict[Any, int] = {}
    codes = np.fromiter((index.setdefault(v if v is None or isinstance(v, (str, int, float, bool)) else str(v),
                                          len(index)) for v in values), dtype=np.int64, count=len(values))
    return codes, list(index)


def suppress(sample: Sample, k: int, window: int) -> Sample:
    """The sample as a producer with rare-value suppression at ``k`` would publish it, its window
    primed with the sample's last ``window`` records."""
    window = max(k, min(window, sample.rows))  # primed with the sample, each record is counted once
    sup = RareSuppressor(k, window)
    for f in sample.fields:  # a producer primed from the same data, as it fits quantile edges
        sup.prime(f, sample.texts[f][-window:])
    texts = {f: sup.apply(f, sample.texts[f]).tolist() for f in sample.fields}
    return Sample(sample.fields, sample.kinds, texts, sample.rows, sample.skipped)


def value_counts(sample: Sample) -> dict[str, dict[str, int]]:
    return {f: dict(Counter(t for t in sample.texts[f] if t is not None)) for f in sample.fields}


def hasher_index(hasher: FeatureHasher) -> IndexOf:
    mask = (1 << hasher.spec.bits) - 1
    from shared.hashspec import feature_bytes
    return lambda field, value: hasher.digest64(feature_bytes(field, value)) & mask


def truth_map(counts: dict[str, dict[str, int]], index_of: IndexOf, kinds: dict[str, str]
              ) -> dict[str, dict[str, int]]:
    """field -> value string -> index, for every field whose index carries the value."""
    return {f: {v: index_of(f, v) for v in vals} for f, vals in counts.items() if kinds[f] != "raw"}


def dictionaries(schema: Schema, public: dict[str, dict[str, int]], kinds: dict[str, str],
                 with_rare: bool) -> dict[str, list[str]]:
    """The attacker's candidates: public values per field, every bin label, crosses of those."""
    extra = [t for t in (schema.missing_token, RARE_TOKEN if with_rare else None) if t]
    out: dict[str, list[str]] = {}
    for n in schema.numeric:
        if not n.raw:
            out[n.name] = [f"{BIN_PREFIX}{i}" for i in range(len(n.edges or ()) + 1)] + extra
    for c in schema.categorical:
        out[c] = list(public.get(c, {})) + extra
    for a, b in schema.crosses:
        if len(out[a]) * len(out[b]) <= MAX_CROSS_CANDIDATES:
            out[a + CROSS_FIELD_JOIN + b] = [x + CROSS_VALUE_JOIN + y for x, y in itertools.product(out[a], out[b])]
    return {f: list(dict.fromkeys(v)) for f, v in out.items() if kinds.get(f) != "raw"}


def fingerprints(sample: Sample, truth: dict[str, dict[str, int]], fields: tuple[str, ...]) -> np.ndarray:
    """(rows, fields) matrix of the index each record publishes per field; -1 where none."""
    mat = np.full((sample.rows, len(fields)), -1, dtype=np.int64)
    for j, f in enumerate(fields):
        idx = truth.get(f)
        col = sample.texts[f]
        mat[:, j] = [(idx[t] if idx is not None else 0) if t is not None else -1 for t in col]
    return mat


def _recovery_json(results: list[FieldRecovery]) -> dict[str, Any]:
    pairs, rec, wrong = total(results)
    return {"pairs": pairs, "recovered": rec, "wrong_matches": wrong,
            "fraction": rec / pairs if pairs else 0.0, "per_field": [asdict(r) | {"fraction": r.fraction,
                                                                                   "cell_fraction": r.cell_fraction}
                                                                      for r in results]}


def _uniq_json(u: Uniqueness) -> dict[str, Any]:
    return asdict(u) | {"fraction": u.fraction, "below_k_fraction": u.below_k_fraction}


def privacy_figures(sample: Sample, truth: dict[str, dict[str, int]], public: dict[str, dict[str, int]],
                    quasi: tuple[str, ...], k: int) -> dict[str, Any]:
    """Uniqueness (all fields, quasi-identifiers, leave-one-out) and the frequency attack."""
    counts = value_counts(sample)
    fields = sample.fields
    mat = fingerprints(sample, truth, fields)
    full = uniqueness(mat, k)
    qcols = [fields.index(q) for q in quasi]
    loo = {f: uniqueness(np.delete(mat, j, axis=1), k).fraction for j, f in enumerate(fields)}
    freq = frequency_attack({f: truth[f] for f in fields if f in truth}, counts, public)
    return {"uniqueness": _uniq_json(full),
            "quasi_identifiers": {"fields": list(quasi), **_uniq_json(uniqueness(mat[:, qcols], k))} if quasi else None,
            "uniqueness_without_field": loo,
            "frequency_attack": _recovery_json(freq),
            "rare_values": {f: sum(1 for c in counts[f].values() if c < k) for f in fields},
            "distinct_values": {f: len(counts[f]) for f in fields}}


def verdicts(report: dict[str, Any], sample: Sample, configured: str, k: int) -> list[dict[str, Any]]:
    """Per field: ok / weak / exposed, the reasons, and what to do about it."""
    figs = report["with_suppression"] or report["without_suppression"]
    dict_frac = {r["field"]: r["fraction"] for r in report["dictionary"][configured]["per_field"]}
    freq = {r["field"]: r for r in figs["frequency_attack"]["per_field"]}
    base_uniq = figs["uniqueness"]["fraction"]
    out = []
    for f in sample.fields:
        reasons, advice, verdict = [], [], OK
        distinct, rare = report["without_suppression"]["distinct_values"][f], figs["rare_values"][f]
        if sample.kinds[f] == "raw":
            verdict = EXPOSED
            reasons.append("the raw number travels in clear in the frame")
            advice.append("bin it (quantile or fixed edges) instead of sending the number")
        if dict_frac.get(f, 0.0) >= 0.5:
            verdict = EXPOSED
            reasons.append(f"dictionary attack recovers {dict_frac[f]:.0%} of its values (unkeyed hash)")
            advice.append("switch the schema to keyed blake2b ([hash] algorithm = \"blake2b\")")
        if sample.rows and distinct >= 0.5 * sample.rows:
            verdict = EXPOSED
            reasons.append(f"{distinct} distinct values in {sample.rows} rows: an identifier")
            advice.append("drop it (list it under drop): its hash is a persistent pseudonym")
        fr = freq.get(f)
        if fr is not None and fr["cell_fraction"] >= 0.5:
            verdict = verdict if verdict == EXPOSED else WEAK
            reasons.append(f"frequency matching names the value of {fr['cell_fraction']:.0%} of its cells "
                           f"({fr['recovered']} of {fr['pairs']} values)")
            if distinct > 20:
                advice.append("coarsen it (group values, or bin wider) so frequencies blur")
        if rare:
            verdict = verdict if verdict == EXPOSED else WEAK
            reasons.append(f"{rare} values seen fewer than {k} times single out their records")
            advice.append(f"suppress rare values below k={k} (or coarsen, or bin wider)")
        drop = base_uniq - figs["uniqueness_without_field"][f]
        if drop >= 0.10:
            verdict = verdict if verdict == EXPOSED else WEAK
            reasons.append(f"without it, unique fingerprints fall by {drop:.0%} of records")
            advice.append("consider dropping or coarsening it: it drives re-identification")
        out.append({"field": f, "kind": sample.kinds[f], "distinct": distinct, "verdict": verdict,
                    "reasons": reasons, "advice": sorted(set(advice), key=advice.index)})
    return out


def audit(schema: Schema, sample: Sample, public: dict[str, dict[str, int]], quasi: tuple[str, ...],
          k: int = 5, suppress_rare: int = 0, window: int = 100_000, key: bytes | None = None) -> dict[str, Any]:
    """The whole report as a JSON-ready dict (see ``docs/audit.md`` for every figure)."""
    key = key or secrets.token_bytes(32)
    keyed = FeatureHasher.keyed(key, schema.bits, schema.signed)
    unkeyed = FeatureHasher.public_mmh3(schema.bits, schema.signed, schema.seed)
    configured = "unkeyed" if schema.algorithm is Algorithm.MMH3_PUBLIC else "keyed"
    counts = value_counts(sample)
    truths = {"keyed": truth_map(counts, hasher_index(keyed), sample.kinds),
              "unkeyed": truth_map(counts, hasher_index(unkeyed), sample.kinds)}
    dicts = dictionaries(schema, public, sample.kinds, with_rare=bool(suppress_rare))
    guesses: dict[str, IndexOf] = {  # what an attacker without the key can try
        "public mmh3 seed 0": hasher_index(FeatureHasher.public_mmh3(schema.bits, schema.signed, 0)),
        "blake2b with a guessed key": hasher_index(FeatureHasher.keyed(secrets.token_bytes(32), schema.bits,
                                                                        schema.signed))}
    keyed_tries = {name: dictionary_attack(truths["keyed"], dicts, g, counts) for name, g in guesses.items()}
    best = max(keyed_tries, key=lambda n: total(keyed_tries[n])[1])
    categorical = set(schema.categorical)
    dict_report = {"unkeyed": _recovery_json(dictionary_attack(truths["unkeyed"], dicts,
                                                               hasher_index(unkeyed), counts)),
                   "keyed": _recovery_json(keyed_tries[best]) | {"best_guess": best, "tries": {
                       n: _recovery_json(r)["fraction"] for n, r in keyed_tries.items()}}}
    for mode in ("unkeyed", "keyed"):
        cat = [r for r in dict_report[mode]["per_field"] if r["field"] in categorical]
        pairs, rec = sum(r["pairs"] for r in cat), sum(r["recovered"] for r in cat)
        dict_report[mode]["categorical"] = {"pairs": pairs, "recovered": rec, "fraction": rec / pairs if pairs else 0.0}
    pairs = dict_report["keyed"]["pairs"]
    dict_report["keyed"]["chance_expected"] = pairs / (1 << schema.bits)  # P(hit own index) per pair
    truth = truths[configured]
    report: dict[str, Any] = {
        "sample": {"rows": sample.rows, "skipped": sample.skipped},
        "schema": {"algorithm": configured, "bits": schema.bits, "fields": list(sample.fields)},
        "k": k,
        "attacker_model": ATTACKER_MODEL,
        "dictionary": dict_report,
        "without_suppression": privacy_figures(sample, truth, public, quasi, k),
        "with_suppression": None,
    }
    if suppress_rare:
        sup = suppress(sample, suppress_rare, window)
        sup_counts = value_counts(sup)
        sup_truth = truth_map(sup_counts, hasher_index(unkeyed if configured == "unkeyed" else keyed), sup.kinds)
        folded = {f: _fold(m, suppress_rare) for f, m in public.items()}  # the attacker folds too
        report["with_suppression"] = privacy_figures(sup, sup_truth, folded, quasi, k) | {
            "k": suppress_rare, "window": window,
            "suppressed_cells": {f: sum(1 for t in sup.texts[f] if t == RARE_TOKEN) for f in sup.fields}}
    report["fields"] = verdicts(report, sample, configured, k)
    return report


def _fold(marginal: dict[str, int], k: int) -> dict[str, int]:
    """A public marginal as a suppressing producer publishes it: values under ``k`` in one bucket."""
    out: Counter[str] = Counter()
    for v, c in marginal.items():
        out[v if c >= k else RARE_TOKEN] += c
    return dict(out)


ATTACKER_MODEL = (
    "The attacker sees every frame (indices and labels) and knows the field names, the schema's bin "
    "labels and a dictionary of candidate values per field (here: every value of the sample, or of "
    "--marginals). Worst case: it can tell which indices belong to which field (the producer writes "
    "indices in field order) and knows each field's public marginal frequencies. It does not hold the key.")


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def render_markdown(r: dict[str, Any]) -> str:
    """The owner's report: headline figures, a table of fields, the attacker model."""
    d, base, sup = r["dictionary"], r["without_suppression"], r["with_suppression"]
    lines = ["# hashbridge audit", "",
             f"Sample: {r['sample']['rows']} records ({r['sample']['skipped']} skipped). Schema hash: "
             f"**{r['schema']['algorithm']}**, {r['schema']['bits']} bits.", "",
             "## Dictionary attack (fraction of (field, value) pairs named correctly)", "",
             "| hash mode | all fields | categorical columns | wrong matches |", "|---|---|---|---|"]
    for mode in ("unkeyed", "keyed"):
        m = d[mode]
        lines.append(f"| {mode}{' (configured)' if mode == r['schema']['algorithm'] else ''} | "
                     f"{m['recovered']}/{m['pairs']} = {_pct(m['fraction'])} | "
                     f"{m['categorical']['recovered']}/{m['categorical']['pairs']} = "
                     f"{_pct(m['categorical']['fraction'])} | {m['wrong_matches']} |")
    lines += ["", f"Keyed mode: the attacker's best guess ({d['keyed']['best_guess']}) names "
              f"{d['keyed']['recovered']} pairs; chance alone would give about "
              f"{d['keyed']['chance_expected']:.4f}. Unkeyed mmh3 is inverted by anyone.", "",
              "## Fingerprints and frequencies", "",
              "| figure | without suppression |" + (f" rare values suppressed (k={sup['k']}) |" if sup else ""),
              "|---|---|" + ("---|" if sup else "")]

    def row(name: str, get: Any) -> None:
        lines.append(f"| {name} | {get(base)} |" + (f" {get(sup)} |" if sup else ""))

    row("records with a unique index set", lambda f: f"{f['uniqueness']['unique']} = {_pct(f['uniqueness']['fraction'])}")
    row(f"records in index-set classes smaller than k={r['k']}", lambda f: _pct(f["uniqueness"]["below_k_fraction"]))
    if base["quasi_identifiers"]:
        q = ", ".join(base["quasi_identifiers"]["fields"])
        row(f"unique on the quasi-identifiers ({q})",
            lambda f: f"{f['quasi_identifiers']['unique']} = {_pct(f['quasi_identifiers']['fraction'])}")
    row("values named by frequency rank", lambda f: f"{f['frequency_attack']['recovered']}/"
        f"{f['frequency_attack']['pairs']} = {_pct(f['frequency_attack']['fraction'])}")
    lines += ["", "## Fields", "", "| field | kind | distinct | verdict | why | advice |", "|---|---|---|---|---|---|"]
    for f in r["fields"]:
        lines.append(f"| {f['field']} | {f['kind']} | {f['distinct']} | **{f['verdict']}** | "
                     f"{'; '.join(f['reasons']) or '-'} | {'; '.join(f['advice']) or '-'} |")
    lines += ["", "## Attacker model", "", r["attacker_model"], "",
              "Figures are measured on the sample with a fresh random key (the owner's key is never read). "
              "See docs/audit.md for definitions.", ""]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hashbridge audit", description=(
        "Measure what the learner's side could recover from the frames of a schema: dictionary and "
        "frequency attacks, unique index sets. Runs at the data owner; never reads the key."))
    p.add_argument("--schema", required=True, help="schema TOML file")
    p.add_argument("--input", required=True, help="a sample of the records (CSV, Parquet or JSON lines)")
    p.add_argument("--out", required=True, help="directory for audit.md and audit.json")
    p.add_argument("--rows", type=int, help="use at most this many records of the sample")
    p.add_argument("--marginals", help="the attacker's public data (same format); default: the sample itself, the worst case")
    p.add_argument("--quasi", help="comma-separated quasi-identifier fields (default: well-known names in the schema)")
    p.add_argument("--k", type=int, default=5, help="class size below which a record counts as singled out (default 5)")
    p.add_argument("--suppress-rare", type=int, default=0, metavar="K",
                   help="also report the figures with values seen fewer than K times suppressed")
    p.add_argument("--window", type=int, default=100_000, help="records in the rare-value window")
    p.add_argument("--fail-on", choices=["exposed", "weak"], help="exit 1 if any field is at least this bad")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        schema, sample = load_sample(load_schema(args.schema), args.input, args.rows)
        public = value_counts(load_sample(schema, args.marginals)[1]) if args.marginals else value_counts(sample)
        quasi = (tuple(q.strip() for q in args.quasi.split(",") if q.strip()) if args.quasi
                 else tuple(f for f in sample.fields if f.lower() in QUASI_IDENTIFIER_NAMES))
        unknown = [q for q in quasi if q not in sample.fields]
        if unknown:
            print(f"hashbridge audit: --quasi names {len(unknown)} fields that are not features", file=sys.stderr)
            return 2
        report = audit(schema, sample, public, quasi, args.k, args.suppress_rare, args.window)
    except (HashbridgeError, OSError, ValueError) as exc:
        print(f"hashbridge audit: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "audit.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    (out / "audit.md").write_text(render_markdown(report), encoding="utf-8")
    d = report["dictionary"]
    print(f"dictionary attack: unkeyed {_pct(d['unkeyed']['categorical']['fraction'])} of categorical pairs, "
          f"keyed {d['keyed']['recovered']} pairs; unique index sets "
          f"{_pct(report['without_suppression']['uniqueness']['fraction'])}; report in {out}")
    worst = {EXPOSED: 2, WEAK: 1, OK: 0}
    level = max((worst[f["verdict"]] for f in report["fields"]), default=0)
    return 1 if args.fail_on and level >= worst[args.fail_on] else 0


if __name__ == "__main__":
    raise SystemExit(main())
