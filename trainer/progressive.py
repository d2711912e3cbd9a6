"""Progressive validation summaries from the kernels' stats rows (additive, so they merge by sum)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from trainer.kernels import HIST_NEG, HIST_POS, N_BINS, S_LOSS, S_N, S_P, S_W, S_Y, STATS_LEN


@dataclass(frozen=True, slots=True)
class Progress:
    records: int
    logloss: float
    auc: float
    mean_prediction: float
    positive_rate: float

    def line(self) -> str:
        return (f"records={self.records} logloss={self.logloss:.4f} auc={self.auc:.4f} "
                f"mean_p={self.mean_prediction:.4f} pos_rate={self.positive_rate:.4f}")


def histogram_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """AUC from margin histograms: a pair in the same bin counts one half."""
    p_total, n_total = float(pos.sum()), float(neg.sum())
    if p_total <= 0 or n_total <= 0:
        return float("nan")
    neg_below = np.concatenate(([0.0], np.cumsum(neg)[:-1]))
    return float((pos * (neg_below + 0.5 * neg)).sum() / (p_total * n_total))


def merge(rows: np.ndarray) -> np.ndarray:
    """One stats row from several (workers'), by summing."""
    return np.asarray(rows, np.float64).reshape(-1, STATS_LEN).sum(axis=0)


def summarize(row: np.ndarray) -> Progress:
    w = float(row[S_W])
    if w <= 0:
        return Progress(int(row[S_N]), math.nan, math.nan, math.nan, math.nan)
    return Progress(int(row[S_N]), float(row[S_LOSS]) / w,
                    histogram_auc(row[HIST_POS:HIST_POS + N_BINS], row[HIST_NEG:HIST_NEG + N_BINS]),
                    float(row[S_P]) / w, float(row[S_Y]) / w)
