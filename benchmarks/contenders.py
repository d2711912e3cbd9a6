"""The contenders, one pass each over the same synthetic data: hashbridge, Vowpal Wabbit, scikit-learn, River.

Each job runs in a fresh child process (``python -m benchmarks.contenders CONFIG_JSON``) so its
peak memory (VmHWM) and CPU seconds are its own and no contender warms caches for the next.
Inputs are filled before the clock starts (arrays loaded, token lists built, numba compiled, VW's
cache built); the clock covers exactly the work named by the contender. The child prints one JSON
line, a list with one row per timed part (wall and CPU seconds, records, peak memory, and test
AUC and logloss when asked to evaluate).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from benchmarks import datagen
from benchmarks.common import BENCH_DIR, CACHE_DIR, cpu_seconds, peak_rss_mib
from shared.startup import BLAS_THREAD_VARS

BENCH_KEY = b"hashbridge-benchmark-key-not-secret"  # fixed so runs repeat; benchmarks only
HASHED_LR = 0.1  # the trainer's default AdaGrad rate
FRAME_ROWS = 10_000  # rows per kernel call, like one decoded frame


# --- hashbridge: vectorised keyed hashing and the trainer kernel --------------------------------

def digests(column: np.ndarray, field: str, algorithm: str = "blake2b", key: bytes = BENCH_KEY) -> np.ndarray:
    """64-bit digests of a column, hashing each distinct value once (the producer's trick)."""
    from shared.hashspec import FeatureHasher, feature_bytes

    hasher = FeatureHasher.keyed(key, 31) if algorithm == "blake2b" else FeatureHasher.public_mmh3(31)
    uniq, inverse = np.unique(column, return_inverse=True)
    d = np.fromiter((hasher.digest64(feature_bytes(field, str(v))) for v in uniq.tolist()),
                    dtype=np.uint64, count=uniq.shape[0])
    return d[inverse.reshape(-1)]


def digest_matrix(columns: list[np.ndarray], names: list[str], algorithm: str = "blake2b",
                  key: bytes = BENCH_KEY) -> np.ndarray:
    """uint64[n, fields]; index at b bits = digest & (2**b - 1), sign = bit 63 (the spec's rule)."""
    return np.stack([digests(c, n, algorithm, key) for c, n in zip(columns, names)], axis=1)


def indices_from(dig: np.ndarray, bits: int, signed: bool) -> tuple[np.ndarray, np.ndarray]:
    """Flat CSR indices (uint32) and values (float32 signs, or empty when unsigned)."""
    idx = (dig & np.uint64((1 << bits) - 1)).astype(np.uint32).reshape(-1)
    if not signed:
        return idx, np.zeros(0, np.float32)
    sign = np.where((dig >> np.uint64(63)) == 1, -1.0, 1.0).astype(np.float32).reshape(-1)
    return idx, sign


def _kernel() -> tuple[Callable[..., None], int, int, str]:
    """The trainer's AdaGrad kernel and its array sizes, or our fallback when it is not importable."""
    try:
        from trainer import kernels as K

        return K.adagrad_frame, K.HP_LEN, K.STATS_LEN, "trainer.kernels.adagrad_frame"
    except Exception:  # noqa: BLE001 - the fallback keeps the study running while the trainer is written
        from benchmarks.accuracy import fallback_adagrad

        return fallback_adagrad, 8, 8, "benchmarks fallback AdaGrad (trainer.kernels not importable)"


def fit_hashed(idx: np.ndarray, values: np.ndarray, labels: np.ndarray, n_fields: int, bits: int,
               lr: float = HASHED_LR, passes: int = 1) -> tuple[np.ndarray, float]:
    """One (or more) in-order AdaGrad passes over fixed-width rows, a frame of rows per kernel call."""
    kernel, hp_len, stats_len, _ = _kernel()
    n = labels.shape[0]
    state = np.zeros((1 << bits, 2), np.float32)
    bias = np.zeros(2, np.float64)
    hp = np.zeros(hp_len, np.float64)
    hp[0] = lr
    stats = np.zeros(stats_len, np.float64)
    empty = np.zeros(0, np.float32)
    offsets = (np.arange(FRAME_ROWS + 1, dtype=np.uint32) * n_fields)
    for _ in range(passes):
        for s in range(0, n, FRAME_ROWS):
            e = min(n, s + FRAME_ROWS)
            off = offsets[: e - s + 1]
            vals = values[s * n_fields: e * n_fields] if values.shape[0] else empty
            kernel(state, bias, labels[s:e], off, idx[s * n_fields: e * n_fields], vals, empty, hp, stats)
    return state[:, 0].copy(), float(bias[0])


def predict_hashed(w: np.ndarray, bias: float, idx: np.ndarray, values: np.ndarray, n_fields: int) -> np.ndarray:
    contrib = w[idx].astype(np.float64)
    if values.shape[0]:
        contrib *= values
    m = contrib.reshape(-1, n_fields).sum(axis=1) + bias
    return 1.0 / (1.0 + np.exp(-m))


def kernel_name() -> str:
    return _kernel()[3]


# --- Vowpal Wabbit: its own parser over the file ------------------------------------------------

def vw_train(train: Path, model: Path, bits: int, options: str = "", cache: Path | None = None) -> None:
    """One pass; building the Workspace with ``-d`` runs the whole pass natively."""
    import vowpalwabbit

    args = f"-d {train} -b {bits} --loss_function logistic --quiet -f {model} {options}"
    if cache is not None:
        args += f" --cache_file {cache}"
    vowpalwabbit.Workspace(args).finish()


def vw_predict(model: Path, test: Path, out: Path) -> np.ndarray:
    import vowpalwabbit

    vowpalwabbit.Workspace(f"-d {test} -t -i {model} --link logistic -p {out} --quiet").finish()
    return np.loadtxt(out, dtype=np.float64, usecols=0)


# --- scikit-learn and River ---------------------------------------------------------------------

def vw_tokens(path: Path, limit: int | None = None) -> tuple[list[list[str]], np.ndarray]:
    """Token lists and 0/1 labels from a VW text file (the same strings VW hashes)."""
    tokens, labels = [], []
    with open(path) as fh:
        for i, line in enumerate(fh):
            if limit is not None and i >= limit:
                break
            parts = line.split()
            labels.append(parts[0] == "1")
            tokens.append(parts[2:])
    return tokens, np.asarray(labels, dtype=np.uint8)


def sk_hasher(bits: int):
    from sklearn.feature_extraction import FeatureHasher

    return FeatureHasher(n_features=1 << bits, input_type="string", alternate_sign=False)


# --- one job in a child process -----------------------------------------------------------------

JOBS: dict[str, tuple[str, ...]] = {  # child job -> the measurements it makes, in order
    "vw": ("vw",), "vw-sgd": ("vw-sgd",), "vw-cache": ("vw-cache",), "vw-cache-sgd": ("vw-cache-sgd",),
    "hashbridge": ("hashbridge-hash", "hashbridge-kernel"),  # one hashing serves both clocks
    "sklearn": ("sklearn-hash", "sklearn-fit"),  # hashing and fitting timed apart, one token build
    "river": ("river",),
}


def _metrics(labels: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    return {"auc": datagen.auc(labels, prob), "logloss": datagen.logloss(labels, prob)}


class _Clock:
    """Times named calls; each becomes one result row with wall and CPU seconds and the records."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def __call__(self, name: str, records: int, fn: Callable[[], object]) -> object:
        c0, t0 = cpu_seconds(), time.perf_counter()
        r = fn()
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
        self.rows.append({"contender": name, "records": records, "wall": wall, "cpu": cpu,
                          "rate": records / wall if wall > 0 else math.nan})
        return r


def _vw(job: str, cfg: dict, files: dict[str, Path], clock: _Clock, tmp: Path) -> None:
    options = "--sgd" if "sgd" in job else ""
    cache = Path(cfg["vw_cache"]) if "cache" in job else None  # built once, untimed, by the parent
    data = datagen.synthetic_cached(cfg["n_rows"], cfg["seed"])
    clock(job, data.n_train, lambda: vw_train(files["train_vw"], tmp / "m.model", cfg["bits"], options, cache))
    if cfg["evaluate"]:
        prob = vw_predict(tmp / "m.model", files["test_vw"], tmp / "p.txt")
        clock.rows[-1].update(_metrics(data.labels[data.split("test")], prob))


def _sklearn(cfg: dict, files: dict[str, Path], clock: _Clock) -> None:
    from sklearn.linear_model import SGDClassifier

    tokens, y = vw_tokens(files["train_vw"])
    hasher = sk_hasher(cfg["bits"])
    X = clock("sklearn-hash", len(tokens), lambda: hasher.transform(tokens))
    clf = SGDClassifier(loss="log_loss", random_state=cfg["seed"])
    clock("sklearn-fit", len(tokens), lambda: clf.partial_fit(X, y, classes=np.array([0, 1])))
    if cfg["evaluate"]:
        tt, ty = vw_tokens(files["test_vw"])
        clock.rows[-1].update(_metrics(ty, clf.predict_proba(hasher.transform(tt))[:, 1]))


def _river(cfg: dict, files: dict[str, Path], clock: _Clock) -> None:
    from river import linear_model

    tokens, y = vw_tokens(files["train_vw"], cfg["river_rows"])
    xs = [dict.fromkeys(t, 1.0) for t in tokens]
    labels = [bool(v) for v in y.tolist()]
    model = linear_model.LogisticRegression()

    def learn() -> None:
        for x, label in zip(xs, labels):
            model.learn_one(x, label)

    clock("river", len(xs), learn)
    if cfg["evaluate"]:
        tt, ty = vw_tokens(files["test_vw"], cfg["river_test_rows"])
        prob = np.array([model.predict_proba_one(dict.fromkeys(t, 1.0)).get(True, 0.0) for t in tt])
        clock.rows[-1].update(_metrics(ty, prob))


def producer_hasher(bits: int, key: bytes = BENCH_KEY):
    """The producer's own schema object and :class:`producer.hashing.Hasher` for the generated CSV
    (every field categorical, keyed BLAKE2b, unsigned), as ``hashbridge produce`` builds them."""
    import tomllib

    from producer.hashing import make_hasher
    from producer.schema import parse_schema

    fields = ", ".join(f'"{f}"' for f in datagen.field_names())
    doc = tomllib.loads(f'header = true\ncategorical = [{fields}]\n[hash]\nalgorithm = "blake2b"\n'
                        f'bits = {bits}\nsigned = false\n[label]\ncolumn = "label"\npositive = ["1"]\n'
                        'negative = ["0"]\n')
    schema = parse_schema(doc)
    return schema, make_hasher(schema, key)


def producer_csr(path: Path, schema, hasher) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """CSV file -> (offsets, indices, values, labels) through the producer's columnar path: its CSV
    source (``producer.sources``: uniform blocks as they lie, as ``hashbridge produce`` reads them)
    and ``Hasher.batch``."""
    from producer.sources import open_source

    offs, idx, vals, labels, base = [np.zeros(1, np.uint64)], [], [], [], 0
    for chunk in open_source(str(path), schema, schema.input_columns, raw_batches=True):
        enc = hasher.batch(chunk.batch)
        offs.append(enc.offsets[1:].astype(np.uint64) + base)
        base += int(enc.offsets[-1])
        idx.append(enc.indices)
        labels.append(enc.labels)
        if enc.values is not None:
            vals.append(enc.values)
    values = np.concatenate(vals) if vals else np.zeros(0, np.float32)
    return np.concatenate(offs), np.concatenate(idx), values, np.concatenate(labels)


def _fixed_width(offsets: np.ndarray, f: int) -> None:
    """The kernel loop below slices fixed-width rows; every generated row has all ``f`` fields."""
    if not np.array_equal(np.diff(offsets), np.full(offsets.shape[0] - 1, f, offsets.dtype)):
        raise ValueError(f"rows are not all {f} features wide")


def _hashbridge(cfg: dict, files: dict[str, Path], clock: _Clock) -> None:
    data = datagen.synthetic_cached(cfg["n_rows"], cfg["seed"])
    bits, f = cfg["bits"], datagen.N_FIELDS
    # compile / load numba's BLAKE2b and touch the file before the clock, on a throwaway hasher so
    # the timed one starts with empty caches (as a fresh ``hashbridge produce`` does)
    import pyarrow as pa

    _, warm = producer_hasher(bits)
    warm_cols = {"label": pa.array(["0", "1"] * 1500)}
    warm_cols.update({n: pa.array([str(i) for i in range(3000)]) for n in datagen.field_names()})
    warm.batch(pa.RecordBatch.from_pydict(warm_cols))
    schema, hasher = producer_hasher(bits)
    offsets, idx, vals, labels = clock("hashbridge-hash", data.n_train,
                                       lambda: producer_csr(files["train_csv"], schema, hasher))
    _fixed_width(offsets, f)
    if labels.shape[0] != data.n_train or not np.array_equal(labels, data.labels[data.split("train")]):
        raise ValueError("the producer's labels differ from the generator's")
    fit_hashed(idx[: 2 * f] & np.uint32(15), vals, labels[:2], f, 4)  # compile before the clock
    w, b = clock("hashbridge-kernel", data.n_train, lambda: fit_hashed(idx, vals, labels, f, bits))
    clock.rows[-1]["kernel"] = kernel_name()
    if cfg["evaluate"]:
        toffs, tidx, tvals, tlabels = producer_csr(files["test_csv"], schema, hasher)
        _fixed_width(toffs, f)
        clock.rows[-1].update(_metrics(tlabels, predict_hashed(w, b, tidx, tvals, f)))


def measure(cfg: dict) -> list[dict]:
    """Run one job once as ``cfg`` says; one result row per timed part."""
    job = cfg["job"]
    files = datagen.synthetic_files(cfg["n_rows"], cfg["seed"])
    clock = _Clock()
    with tempfile.TemporaryDirectory(prefix="hb-bench-") as tmp:
        if job.startswith("vw"):
            _vw(job, cfg, files, clock, Path(tmp))
        elif job == "sklearn":
            _sklearn(cfg, files, clock)
        elif job == "river":
            _river(cfg, files, clock)
        elif job == "hashbridge":
            _hashbridge(cfg, files, clock)
        else:
            raise ValueError(f"unknown job {job!r}")
    peak = peak_rss_mib()  # the whole child: data, token lists and model of this job
    for row in clock.rows:
        row["peak_rss_mib"] = peak
    return clock.rows


def vw_cache_path(n_rows: int, bits: int) -> Path:
    """Where VW's binary cache of the synthetic set of ``n_rows`` rows at ``bits`` bits is kept."""
    return CACHE_DIR / f"vw-n{n_rows}-b{bits}.cache"


def build_vw_cache(cfg: dict, cache: Path) -> None:
    """VW's binary cache of the training file, made once before any clock (``-k`` rewrites it)."""
    files = datagen.synthetic_files(cfg["n_rows"], cfg["seed"])
    vw_train(files["train_vw"], cache.with_suffix(".model"), cfg["bits"], "-k", cache)


def run_child(cfg: dict, timeout: float = 300.0) -> list[dict]:
    """Measure in a fresh interpreter; a failure comes back as ``[{"error": ...}]``, not an exception."""
    env = dict(os.environ)
    for var in BLAS_THREAD_VARS:
        env[var] = "1"
    env["PYTHONPATH"] = str(BENCH_DIR.parent) + os.pathsep + env.get("PYTHONPATH", "")
    failed = [{"contender": name} for name in JOBS[cfg["job"]]]
    try:
        proc = subprocess.run([sys.executable, "-m", "benchmarks.contenders", json.dumps(cfg)],
                              capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return [{**f, "error": f"timed out after {timeout:.0f} s"} for f in failed]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("[")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return [{**f, "error": " | ".join(tail) or f"exit {proc.returncode}"} for f in failed]
    return json.loads(lines[-1])


if __name__ == "__main__":
    print(json.dumps(measure(json.loads(sys.argv[1]))))
