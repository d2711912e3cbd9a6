"""Deterministic benchmark data: a Criteo-like synthetic set whose best possible AUC is known, and Adult.

The synthetic set has 20 categorical fields with cardinalities log-spaced from 10 to 1,000,000 and
Zipf-like value frequencies (a few values are everywhere, most are rare, as in click logs). Labels
come from a known logistic model: every value of every field has a weight drawn from a seeded RNG,
so the true click probability of each row is known and the AUC of those probabilities on the test
split is the ceiling no learner can beat (in expectation). Everything is vectorised numpy; the
text files (CSV with header, VW text) are written by pyarrow and cached under ``CACHE_DIR``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.common import CACHE_DIR
from shared.datasets import adult_dir

N_FIELDS = 20
MIN_CARD, MAX_CARD = 10, 1_000_000
ZIPF_S = 1.05  # value-frequency exponent: P(rank r) ~ 1 / r**s
WEIGHT_SD = 0.3  # per-value weight spread; gives a best AUC near 0.8, like click data
BIAS = -1.2  # about a quarter of the labels positive
TEST_FRACTION = 0.1
GEN_VERSION = 1  # bump when the generator changes, so stale cache files are not reused
# the UCI files: bundled in data/adult (or ../shared/data/adult beside the repo)
ADULT_DIR = adult_dir()
ADULT_COLUMNS = ("age", "workclass", "fnlwgt", "education", "education-num", "marital-status",
                 "occupation", "relationship", "race", "sex", "capital-gain", "capital-loss",
                 "hours-per-week", "native-country")
ADULT_NUMERIC = ("age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week")


def field_names() -> list[str]:
    return [f"c{i:02d}" for i in range(N_FIELDS)]


def cardinalities() -> np.ndarray:
    return np.geomspace(MIN_CARD, MAX_CARD, N_FIELDS).round().astype(np.int64)


@dataclass(frozen=True)
class Synthetic:
    """The generated set as arrays: value ids per field, labels and the true probabilities."""

    values: np.ndarray  # int32[n, N_FIELDS]: value id (Zipf rank order scrambled) per field
    labels: np.ndarray  # uint8[n]
    prob: np.ndarray  # float64[n]: the true P(label = 1 | row)
    n_train: int  # rows [0, n_train) are the training split, the rest the test split
    seed: int

    @property
    def n(self) -> int:
        return int(self.labels.shape[0])

    def split(self, part: str) -> slice:
        return slice(0, self.n_train) if part == "train" else slice(self.n_train, self.n)

    @property
    def best_auc(self) -> float:
        """AUC of the true probabilities on the test split: the known ceiling."""
        s = self.split("test")
        return auc(self.labels[s], self.prob[s])

    @property
    def best_logloss(self) -> float:
        s = self.split("test")
        return logloss(self.labels[s], self.prob[s])


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by the Mann-Whitney rank sum, ties given their average rank."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(s.size, dtype=np.float64)
    # average rank (1-based) over each run of equal scores
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    ends = np.r_[starts[1:], s.size]
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def logloss(labels: np.ndarray, prob: np.ndarray, eps: float = 1e-15) -> float:
    y = np.asarray(labels, dtype=np.float64)
    p = np.clip(np.asarray(prob, dtype=np.float64), eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def _field_rngs(seed: int) -> list[np.random.Generator]:
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(N_FIELDS + 1)]


def synthetic(n_rows: int, seed: int = 0) -> Synthetic:
    """Generate ``n_rows`` rows (vectorised; a million rows in a few seconds)."""
    rngs = _field_rngs(seed)
    values = np.empty((n_rows, N_FIELDS), dtype=np.int32)
    logit = np.full(n_rows, BIAS, dtype=np.float64)
    for f, card in enumerate(cardinalities()):
        rng = rngs[f]
        # the weights and the rank -> value-id scramble depend on the field only, not on n_rows
        weights = rng.normal(0.0, WEIGHT_SD, int(card))
        scramble = rng.permutation(int(card)).astype(np.int32)
        cdf = np.cumsum(1.0 / np.arange(1, card + 1, dtype=np.float64) ** ZIPF_S)
        cdf /= cdf[-1]
        ranks = np.searchsorted(cdf, rng.random(n_rows), side="right")
        np.minimum(ranks, card - 1, out=ranks)
        values[:, f] = scramble[ranks]
        logit += weights[ranks]
    prob = 1.0 / (1.0 + np.exp(-logit))
    labels = (rngs[N_FIELDS].random(n_rows) < prob).astype(np.uint8)
    n_train = n_rows - int(round(n_rows * TEST_FRACTION))
    return Synthetic(values, labels, prob, n_train, seed)


def _write_text(path: Path, columns: list, names: list[str], header: bool, delimiter: str) -> None:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    table = pa.table(columns, names=names)
    opts = pacsv.WriteOptions(include_header=False, delimiter=delimiter, quoting_style="none")
    tmp = path.with_suffix(path.suffix + ".tmp")
    with pa.OSFile(str(tmp), "wb") as sink:
        if header:  # pyarrow quotes header names; a plain header line is friendlier to every reader
            sink.write((delimiter.join(names) + "\n").encode())
        pacsv.write_csv(table, sink, write_options=opts)
    tmp.replace(path)


def _write_csv(path: Path, data: Synthetic, part: str) -> None:
    s = data.split(part)
    cols = [data.labels[s]] + [data.values[s, f] for f in range(N_FIELDS)]
    _write_text(path, cols, ["label"] + field_names(), header=True, delimiter=",")


def _write_vw(path: Path, data: Synthetic, part: str) -> None:
    """VW text: ``1 |f c00_123 c01_7 ...`` (labels -1/1), one namespace, the field in each token."""
    import pyarrow as pa
    import pyarrow.compute as pc

    s = data.split(part)
    label = np.where(data.labels[s] == 1, "1", "-1")
    cols = [pa.array(label), pa.array(np.full(label.shape[0], "|f"))]
    for f, name in enumerate(field_names()):
        ids = pc.cast(pa.array(data.values[s, f]), pa.string())
        cols.append(pc.binary_join_element_wise(pa.scalar(name), ids, "_"))
    _write_text(path, cols, [f"x{i}" for i in range(len(cols))], header=False, delimiter=" ")


def synthetic_files(n_rows: int, seed: int = 0) -> dict[str, Path]:
    """Train/test CSV and VW text files of :func:`synthetic` plus a meta JSON, cached on disk."""
    base = CACHE_DIR / f"synth-v{GEN_VERSION}-n{n_rows}-s{seed}"
    paths = {f"{part}_{kind}": base / f"{part}.{kind}" for part in ("train", "test") for kind in ("csv", "vw")}
    paths["meta"] = base / "meta.json"
    if all(p.exists() for p in paths.values()):
        return paths
    base.mkdir(parents=True, exist_ok=True)
    data = synthetic(n_rows, seed)
    for part in ("train", "test"):
        _write_csv(paths[f"{part}_csv"], data, part)
        _write_vw(paths[f"{part}_vw"], data, part)
    meta = {"n_rows": n_rows, "n_train": data.n_train, "seed": seed, "fields": field_names(),
            "cardinalities": cardinalities().tolist(), "zipf_s": ZIPF_S, "weight_sd": WEIGHT_SD,
            "bias": BIAS, "best_auc": data.best_auc, "best_logloss": data.best_logloss,
            "positive_rate": float(data.labels.mean())}
    paths["meta"].write_text(json.dumps(meta, indent=2) + "\n")
    return paths


@dataclass(frozen=True)
class Adult:
    """One Adult split as strings per column (``?`` kept as a value) and 0/1 labels."""

    columns: dict[str, np.ndarray]  # column name -> array of str
    labels: np.ndarray  # uint8

    @property
    def n(self) -> int:
        return int(self.labels.shape[0])


def adult_paths() -> dict[str, Path]:
    return {"train": ADULT_DIR / "adult.data", "test": ADULT_DIR / "adult.test",
            "names": ADULT_DIR / "adult.names"}


def load_adult(part: str) -> Adult:
    """Parse the UCI original: ``", "`` separators, a junk first line and ``.`` labels in the test file."""
    rows = []
    for line in adult_paths()[part].read_text().splitlines():
        if not line.strip() or line.startswith("|"):
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) == len(ADULT_COLUMNS) + 1:
            rows.append(fields)
    table = np.array(rows, dtype=object)
    columns = {name: table[:, i].astype(str) for i, name in enumerate(ADULT_COLUMNS)}
    labels = (np.char.rstrip(table[:, -1].astype(str), ".") == ">50K").astype(np.uint8)
    return Adult(columns, labels)


def synthetic_cached(n_rows: int, seed: int = 0) -> Synthetic:
    """:func:`synthetic`, kept as an ``.npz`` so benchmark child processes load it in milliseconds."""
    path = CACHE_DIR / f"synth-v{GEN_VERSION}-n{n_rows}-s{seed}" / "arrays.npz"
    if path.exists():
        z = np.load(path)
        return Synthetic(z["values"], z["labels"], z["prob"], int(z["n_train"]), seed)
    data = synthetic(n_rows, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("arrays.tmp.npz")
    np.savez(tmp, values=data.values, labels=data.labels, prob=data.prob, n_train=data.n_train)
    tmp.replace(path)
    return data
