"""The exact reference for the demo: unhashed one-hot logistic regression fitted by Newton/IRLS.

Same tokens the producer hashes (categorical values, '?' as missing, numeric columns binned on the
producer's quantile edges), but one column per distinct token: no collisions, no key, and a full
Newton solve instead of one online pass, so the gap to it is what hashing + online learning cost.
"""
from __future__ import annotations

import bisect
from pathlib import Path

import numpy as np

COLUMNS = ("age", "workclass", "fnlwgt", "education", "education-num", "marital-status",
           "occupation", "relationship", "race", "sex", "capital-gain", "capital-loss",
           "hours-per-week", "native-country")
NUMERIC = ("age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week")


def read_adult(path: str | Path) -> tuple[dict[int, list[str]], dict[int, int]]:
    """Records and 0/1 labels keyed by 1-based line number (the score client's local id)."""
    rows: dict[int, list[str]] = {}
    labels: dict[int, int] = {}
    for line_no, line in enumerate(Path(path).read_text().splitlines(), start=1):
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 15:
            continue  # adult.test's first line and blank lines
        rows[line_no] = parts[:14]
        labels[line_no] = 1 if parts[14].rstrip(".") == ">50K" else 0
    return rows, labels


def tokens(row: list[str], edges: dict[str, list[float]]) -> list[str]:
    out = []
    for name, value in zip(COLUMNS, row):
        if value in ("", "?"):
            out.append(f"{name}=__missing__")
        elif name in NUMERIC and name in edges:
            out.append(f"{name}#{bisect.bisect_right(edges[name], float(value))}")
        else:
            out.append(f"{name}={value}")
    return out


def design(rows: list[list[str]], edges: dict[str, list[float]], vocab: dict[str, int] | None = None
           ) -> tuple[np.ndarray, dict[str, int]]:
    """Dense one-hot matrix with an intercept column; tokens unseen in training are dropped."""
    toks = [tokens(r, edges) for r in rows]
    if vocab is None:
        vocab = {}
        for ts in toks:
            for t in ts:
                vocab.setdefault(t, len(vocab) + 1)
    x = np.zeros((len(rows), len(vocab) + 1))
    x[:, 0] = 1.0
    for i, ts in enumerate(toks):
        for t in ts:
            j = vocab.get(t)
            if j is not None:
                x[i, j] = 1.0
    return x, vocab


def fit_irls(x: np.ndarray, y: np.ndarray, l2: float = 1e-4, iters: int = 50, tol: float = 1e-10) -> np.ndarray:
    """Newton's method on the L2-penalised log-likelihood (the tiny ridge keeps separable one-hot
    columns, such as a country seen once, finite)."""
    w = np.zeros(x.shape[1])
    reg = np.full(x.shape[1], l2 * len(y))
    reg[0] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(x @ w)))
        grad = x.T @ (p - y) + reg * w
        hess = (x * (p * (1 - p))[:, None]).T @ x + np.diag(reg)
        step = np.linalg.solve(hess, grad)
        w -= step
        if float(np.abs(step).max()) < tol:
            break
    return w


def predict(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(x @ w)))


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """Exact ROC AUC with ties counted half (Mann-Whitney U from average ranks)."""
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p))
    sp = p[order]
    i = 0
    while i < len(sp):  # average ranks over ties
        j = i
        while j + 1 < len(sp) and sp[j + 1] == sp[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def logloss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def fit_edges(rows: list[list[str]], n_bins: int = 20) -> dict[str, list[float]]:
    """Quantile edges like the producer's (used when its edges file is not at hand)."""
    from producer.schema import quantile_edges

    out = {}
    for name in NUMERIC:
        j = COLUMNS.index(name)
        out[name] = quantile_edges([float(r[j]) for r in rows if r[j] not in ("", "?")], n_bins)
    return out


def baseline(train_path: str | Path, test_path: str | Path,
             edges: dict[str, list[float]] | None = None) -> dict[str, float]:
    """Fit on the training file, evaluate on the test file: AUC, logloss, feature count."""
    tr_rows, tr_lab = read_adult(train_path)
    edges = edges or fit_edges(list(tr_rows.values()))
    te_rows, te_lab = read_adult(test_path)
    x, vocab = design(list(tr_rows.values()), edges)
    w = fit_irls(x, np.array(list(tr_lab.values()), float))
    xt, _ = design(list(te_rows.values()), edges, vocab)
    yt = np.array(list(te_lab.values()), float)
    p = predict(xt, w)
    return {"auc": auc(yt, p), "logloss": logloss(yt, p), "features": len(vocab)}
