"""Accuracy against hash bits: how few bits hashing can afford before it costs AUC.

On Adult and on the synthetic set, one in-order pass of AdaGrad logistic regression (the trainer's
kernel) on hashed features at 2^10..2^24 buckets, beside: the same learner on exact one-hot
features (no collisions: the pure cost of hashing is the gap to this one), scikit-learn's converged
``LogisticRegression`` on the one-hot features (a batch reference), and, on the synthetic set, the
generator's known best AUC. Variants: keyed BLAKE2b with five keys (their spread is the noise
level of "which collisions happen"), signed hashing, and public mmh3, which must agree with BLAKE2b
within that noise.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from benchmarks import datagen
from benchmarks.common import write_result
from benchmarks.contenders import (BENCH_KEY, HASHED_LR, digest_matrix, fit_hashed, indices_from,
                                   kernel_name, predict_hashed)

N_BINS = 20  # quantile bins per Adult numeric column, learned on the training file
KEYS = (BENCH_KEY,) + tuple(BENCH_KEY + b"-%d" % i for i in range(2, 6))  # 5 keys: 5 collision draws
ADULT_BITS_TARGET = 20
ADULT_TOLERANCE = 0.002


@njit(cache=True, nogil=True)
def fallback_adagrad(state, bias, labels, offsets, indices, values, rweights, hp, stats):  # noqa: ARG001
    """AdaGrad logistic regression, used only while ``trainer.kernels`` is not importable."""
    lr = hp[0]
    has_v = values.shape[0] > 0
    for i in range(labels.shape[0]):
        m = bias[0]
        for k in range(offsets[i], offsets[i + 1]):
            m += state[indices[k], 0] * (values[k] if has_v else 1.0)
        g = 1.0 / (1.0 + math.exp(-m)) - labels[i]
        for k in range(offsets[i], offsets[i + 1]):
            gi = g * (values[k] if has_v else 1.0)
            state[indices[k], 1] += gi * gi
            if state[indices[k], 1] > 0.0:
                state[indices[k], 0] -= lr * gi / math.sqrt(state[indices[k], 1])
        bias[1] += g * g
        bias[0] -= lr * g / math.sqrt(bias[1])


# --- features --------------------------------------------------------------------------------

def _bin_numeric(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quantile bins learned on the training column (duplicate edges merged, e.g. capital-gain)."""
    tr, te = train.astype(np.float64), test.astype(np.float64)
    try:  # the producer's own rule when it is there (bins are bisect_right over these edges)
        from producer.schema import quantile_edges

        edges = np.asarray(quantile_edges(tr.tolist(), N_BINS))
    except ImportError:
        edges = np.unique(np.quantile(tr, np.linspace(0, 1, N_BINS + 1)[1:-1]))
    return np.searchsorted(edges, tr, side="right"), np.searchsorted(edges, te, side="right")


def adult_features() -> tuple[list[str], list[np.ndarray], list[np.ndarray], np.ndarray, np.ndarray]:
    """Names, train and test columns (as values to hash) and labels; numeric columns binned."""
    tr, te = datagen.load_adult("train"), datagen.load_adult("test")
    names, ctr, cte = [], [], []
    for name in datagen.ADULT_COLUMNS:
        a, b = tr.columns[name], te.columns[name]
        if name in datagen.ADULT_NUMERIC:
            a, b = _bin_numeric(a, b)
        names.append(name)
        ctr.append(a)
        cte.append(b)
    return names, ctr, cte, tr.labels, te.labels


def synthetic_features(n_rows: int) -> tuple[list[str], list[np.ndarray], list[np.ndarray], np.ndarray, np.ndarray, datagen.Synthetic]:
    data = datagen.synthetic_cached(n_rows)
    tr, te = data.split("train"), data.split("test")
    cols_tr = [data.values[tr, f] for f in range(datagen.N_FIELDS)]
    cols_te = [data.values[te, f] for f in range(datagen.N_FIELDS)]
    return datagen.field_names(), cols_tr, cols_te, data.labels[tr], data.labels[te], data


def one_hot(cols_tr: list[np.ndarray], cols_te: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, int]:
    """Exact indices: one slot per (field, value) seen in training; unseen test values get a zero slot."""
    itr, ite, base = [], [], 1  # slot 0 is never trained: the unseen values' weight stays 0
    for a, b in zip(cols_tr, cols_te):
        uniq, inv = np.unique(a, return_inverse=True)
        pos = np.searchsorted(uniq, b)
        pos = np.minimum(pos, uniq.shape[0] - 1)
        seen = uniq[pos] == b
        itr.append(inv.reshape(-1) + base)
        ite.append(np.where(seen, pos + base, 0))
        base += uniq.shape[0]
    return (np.stack(itr, 1).astype(np.uint32).reshape(-1), np.stack(ite, 1).astype(np.uint32).reshape(-1), base)


def _sklearn_exact(itr: np.ndarray, ite: np.ndarray, width: int, n_fields: int, ytr: np.ndarray, yte: np.ndarray) -> dict:
    from scipy.sparse import csr_matrix
    from sklearn.linear_model import LogisticRegression

    def matrix(idx: np.ndarray) -> csr_matrix:
        n = idx.shape[0] // n_fields
        return csr_matrix((np.ones(idx.shape[0]), idx, np.arange(n + 1) * n_fields), shape=(n, width))

    clf = LogisticRegression(C=1.0, max_iter=300)
    clf.fit(matrix(itr), ytr)
    p = clf.predict_proba(matrix(ite))[:, 1]
    return {"auc": datagen.auc(yte, p), "logloss": datagen.logloss(yte, p), "iterations": int(clf.n_iter_[0])}


# --- the study ---------------------------------------------------------------------------------

def _fit_eval(dtr: np.ndarray, dte: np.ndarray, ytr: np.ndarray, yte: np.ndarray, bits: int, signed: bool) -> dict:
    f = dtr.shape[1]
    itr, vtr = indices_from(dtr, bits, signed)
    ite, vte = indices_from(dte, bits, signed)
    w, b = fit_hashed(itr, vtr, ytr, f, bits)
    p = predict_hashed(w, b, ite, vte, f)
    return {"auc": datagen.auc(yte, p), "logloss": datagen.logloss(yte, p)}


def study(names: list[str], ctr: list[np.ndarray], cte: list[np.ndarray], ytr: np.ndarray, yte: np.ndarray,
          bits_range: list[int], sklearn_exact: bool = True) -> dict:
    ytr = np.ascontiguousarray(ytr, np.uint8)
    f = len(names)
    itr, ite, width = one_hot(ctr, cte)
    w, b = fit_hashed(itr, np.zeros(0, np.float32), ytr, f, max(1, math.ceil(math.log2(width))))
    p = predict_hashed(w, b, ite, np.zeros(0, np.float32), f)
    out: dict = {"n_train": int(ytr.shape[0]), "n_test": int(yte.shape[0]), "fields": f,
                 "one_hot_width": width,
                 "exact_same_learner": {"auc": datagen.auc(yte, p), "logloss": datagen.logloss(yte, p)}}
    if sklearn_exact:
        out["exact_sklearn_lr"] = _sklearn_exact(itr, ite, width, f, ytr, yte)
    keyed = [(digest_matrix(ctr, names, key=k), digest_matrix(cte, names, key=k)) for k in KEYS]
    mm = (digest_matrix(ctr, names, "mmh3"), digest_matrix(cte, names, "mmh3"))
    pairs = np.unique(keyed[0][0])  # one digest per distinct training (field, value) pair
    rows = []
    for bits in bits_range:
        per_key = [_fit_eval(dtr, dte, ytr, yte, bits, False) for dtr, dte in keyed]
        aucs = [r["auc"] for r in per_key]
        row = {"bits": bits, "auc": float(np.mean(aucs)),
               "logloss": float(np.mean([r["logloss"] for r in per_key])), "auc_keys": aucs,
               "auc_key_sd": float(np.std(aucs, ddof=1)),
               "signed": _fit_eval(*keyed[0], ytr, yte, bits, True),
               "mmh3": _fit_eval(*mm, ytr, yte, bits, False)}
        row["mmh3_minus_blake2b"] = row["mmh3"]["auc"] - row["auc"]
        _, counts = np.unique(pairs & np.uint64((1 << bits) - 1), return_counts=True)
        row["pairs_sharing_a_bucket"] = int(counts[counts > 1].sum())  # first key, training pairs
        rows.append(row)
    out["curve"] = rows
    return out


def _checks(res: dict, exact_key: str) -> dict:
    exact = res[exact_key]["auc"]
    at = {r["bits"]: r for r in res["curve"]}
    checks: dict = {}
    if ADULT_BITS_TARGET in at:
        gap = at[ADULT_BITS_TARGET]["auc"] - exact
        checks["auc_gap_at_2^20"] = gap
        checks["within_0.002_at_2^20"] = abs(gap) <= ADULT_TOLERANCE
    costly = [r["bits"] for r in res["curve"] if exact - r["auc"] > ADULT_TOLERANCE]
    checks["fewest_bits_within_0.002"] = min((r["bits"] for r in res["curve"]
                                              if exact - r["auc"] <= ADULT_TOLERANCE), default=None)
    checks["bits_that_cost_more_than_0.002"] = costly
    # one mmh3 draw against the mean of k keyed draws: sd of the difference is sd * sqrt(1 + 1/k)
    k = len(KEYS)
    noise = [max(3 * r["auc_key_sd"] * math.sqrt(1 + 1 / k), 5e-4) for r in res["curve"]]
    checks["mmh3_within_noise"] = all(abs(r["mmh3_minus_blake2b"]) <= n for r, n in zip(res["curve"], noise))
    checks["mmh3_outside_noise_at_bits"] = [r["bits"] for r, n in zip(res["curve"], noise)
                                            if abs(r["mmh3_minus_blake2b"]) > n]
    return checks


def run(quick: bool = False) -> dict:
    bits_range = list(range(10, 25, 2))  # the synthetic fits dominate the run time
    adult_bits = list(range(4, 25, 2 if quick else 1))  # Adult is small: go low enough to see the knee
    n_rows = 100_000 if quick else 1_000_000
    figures: dict = {"kernel": kernel_name(), "lr": HASHED_LR, "passes": 1, "bits": bits_range}
    names, ctr, cte, ytr, yte = adult_features()
    figures["adult"] = study(names, ctr, cte, ytr, yte, adult_bits)
    figures["adult"]["checks"] = _checks(figures["adult"], "exact_same_learner")
    figures["adult"]["checks_vs_sklearn"] = _checks(figures["adult"], "exact_sklearn_lr")
    names, ctr, cte, ytr, yte, data = synthetic_features(n_rows)
    syn = study(names, ctr, cte, ytr, yte, bits_range, sklearn_exact=quick)
    syn.update(best_auc=data.best_auc, best_logloss=data.best_logloss, n_rows=n_rows)
    syn["checks"] = _checks(syn, "exact_same_learner")
    figures["synthetic"] = syn
    notes = [
        f"Hashed and exact models: one in-order pass of AdaGrad (lr {HASHED_LR}) with {figures['kernel']}.",
        "Adult features: categorical columns as is ('?' is a value), numeric columns in 20 quantile "
        "bins learned on adult.data with producer.schema.quantile_edges (bin = bisect_right over the "
        "edges, as the producer does; a numpy equivalent if the producer is not importable).",
        "'exact_same_learner' is the same pass on collision-free one-hot indices: the gap to it is the "
        "cost of hashing alone; 'exact_sklearn_lr' is scikit-learn LogisticRegression (lbfgs, C=1) to "
        "convergence on the same one-hot features.",
        "Adult has only ~165 distinct (field, value) pairs, so its curve starts at 2^4 to show where "
        "collisions begin to cost AUC; the synthetic set (~10^5..10^6 pairs) covers 2^10..2^24.",
        "BLAKE2b AUC and logloss are means over the keys; signed hashing uses the first key.",
        f"Noise: AUC spread (sd) over {len(KEYS)} BLAKE2b keys, i.e. {len(KEYS)} draws of the collision "
        "pattern; mmh3 (one more draw) passes when it is within max(3 sd sqrt(1 + 1/k), 0.0005) of the "
        "keyed mean at every bit count.",
    ]
    if not quick:
        notes.append("Synthetic set: the converged scikit-learn one-hot model is skipped at 1M rows "
                     "(too slow for the 20-minute budget); the generator's best AUC is the ceiling.")
    write_result("accuracy", figures, notes)
    return figures
