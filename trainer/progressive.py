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


# --- the per-worker learning curve (opt-in, ``--curve-records``) ---

@dataclass(frozen=True, slots=True)
class CurveRow:
    """One worker's cumulative stats row at a monotonic time. ``point`` False: a start row
    (posted when a worker attaches, before it learns), which sets the worker's baseline but is
    not a point of the curve itself."""

    time: float
    worker: int
    stats: np.ndarray
    point: bool = True


def curve_points(latest: np.ndarray, rows: list[CurveRow]) -> tuple[list[tuple[float, Progress]], np.ndarray]:
    """Merge new rows of all workers into overall points, in time order.

    ``latest`` (workers x STATS_LEN) holds each worker's latest row from earlier calls (zeros if
    none). A point of worker i at time t adds the latest row of every other worker at or before t.
    Rows at equal times go in worker order, then input order. Returns the points
    ``(time, Progress)`` and the updated ``latest`` (a new array; the argument is not modified).
    """
    cur = np.array(latest, np.float64, copy=True)
    points: list[tuple[float, Progress]] = []
    for k in sorted(range(len(rows)), key=lambda k: (rows[k].time, rows[k].worker, k)):
        r = rows[k]
        cur[r.worker] = r.stats
        if r.point:
            points.append((r.time, summarize(merge(cur))))
    return points, cur


class Curve:
    """The supervisor's reader state: ring cursors per worker, the latest row of each, and rows
    not yet merged.

    A row is stamped before it is published, so a row of one worker may become visible after a
    later row of another was read. Rows newer than ``horizon`` therefore wait for the next
    update; ``HOLD`` seconds covers a worker descheduled between stamp and publish.
    """

    HOLD = 0.1

    def __init__(self, workers: int) -> None:
        self.cursors = np.zeros(workers, np.int64)
        self.latest = np.zeros((workers, STATS_LEN))
        self.pending: list[CurveRow] = []
        self.skipped = 0  # rows overwritten in a ring before they were read

    def update(self, rows: list[CurveRow], skipped: int = 0,
               horizon: float | None = None) -> list[tuple[float, Progress]]:
        """Merge rows up to ``horizon`` (all when None: no worker runs any more)."""
        self.skipped += skipped
        rows = self.pending + rows
        if horizon is None:
            ready, self.pending = rows, []
        else:
            ready = [r for r in rows if r.time <= horizon]
            self.pending = [r for r in rows if r.time > horizon]
        points, self.latest = curve_points(self.latest, ready)
        return points
