"""The opt-in per-worker learning curve: the merge against a brute-force version, the ring in
shared memory, the worker posting at multiples of ``--curve-records``, and the flag."""
from __future__ import annotations

import math

import numpy as np
import pytest

from shared.errors import ConfigError
from trainer import kernels as K
from trainer import shm as S
from trainer.progressive import Curve, CurveRow, curve_points, merge, summarize
from trainer.settings import TrainerSettings


def random_rows(rng, workers, n, t0=0.0, ties=True):
    """Cumulative stats rows per worker at increasing times (ties across workers included)."""
    rows, cum = [], np.zeros((workers, K.STATS_LEN))
    t = t0
    for _ in range(n):
        w = int(rng.integers(workers))
        k = int(rng.integers(1, 50))
        cum[w, K.S_N] += k
        cum[w, K.S_W] += k
        cum[w, K.S_LOSS] += rng.uniform(0, 0.7) * k
        cum[w, K.S_P] += rng.uniform(0, 1) * k
        cum[w, K.S_Y] += rng.integers(0, k + 1)
        cum[w, K.HIST_POS + rng.integers(K.N_BINS)] += rng.integers(0, k + 1)
        cum[w, K.HIST_NEG + rng.integers(K.N_BINS)] += rng.integers(0, k + 1)
        t += float(rng.choice([0.0, 0.001, 0.01] if ties else [0.001, 0.01]))
        rows.append(CurveRow(t, w, cum[w].copy(), point=bool(rng.uniform() < 0.9)))
    return rows


def brute_force(rows, workers):
    """For each point row (i, t): the latest row at or before t of every worker, summed."""
    out = []
    keyed = sorted(enumerate(rows), key=lambda kr: (kr[1].time, kr[1].worker, kr[0]))
    for pos, (_, r) in enumerate(keyed):
        if not r.point:
            continue
        total = np.zeros(K.STATS_LEN)
        for w in range(workers):
            seen = [x for _, x in keyed[:pos + 1] if x.worker == w]
            if seen:
                total += seen[-1].stats
        out.append((r.time, summarize(total)))
    return out


def same_points(a, b):
    assert len(a) == len(b)
    for (ta, pa), (tb, pb) in zip(a, b):
        assert ta == tb and pa.records == pb.records
        for f in ("logloss", "auc", "mean_prediction", "positive_rate"):
            x, y = getattr(pa, f), getattr(pb, f)
            assert (math.isnan(x) and math.isnan(y)) or x == pytest.approx(y, rel=1e-12), f


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_curve_points_match_brute_force_in_one_call(workers):
    rows = random_rows(np.random.default_rng(workers), workers, 120)
    got, latest = curve_points(np.zeros((workers, K.STATS_LEN)), rows)
    same_points(got, brute_force(rows, workers))
    np.testing.assert_array_equal(merge(latest)[K.S_N], sum(
        [r for r in rows if r.worker == w][-1].stats[K.S_N] for w in range(workers)
        if any(r.worker == w for r in rows)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_curve_points_split_across_reports_equal_one_call(seed):
    """The supervisor sees the rows in batches (one per report), each batch grouped by worker.
    (Equal times of two workers on both sides of a report are not ordered by worker; the
    monotonic clock makes them practically impossible, so this test has none.)"""
    rng = np.random.default_rng(seed)
    rows = random_rows(rng, 2, 150, ties=False)
    cuts = sorted(rng.choice(np.arange(1, 150), 5, replace=False))
    curve, got = Curve(2), []
    for a, b in zip([0, *cuts], [*cuts, 150]):
        batch = rows[a:b]
        by_worker = [r for r in batch if r.worker == 1] + [r for r in batch if r.worker == 0]
        got += curve.update(by_worker)
    same_points(got, brute_force(rows, 2))


def test_points_are_monotonic_in_records():
    rows = random_rows(np.random.default_rng(9), 3, 200)
    pts, _ = curve_points(np.zeros((3, K.STATS_LEN)), rows)
    recs = [p.records for _, p in pts]
    assert recs == sorted(recs) and len(pts) == sum(r.point for r in rows)


def test_start_rows_set_the_baseline_without_a_point():
    base = np.zeros(K.STATS_LEN)
    base[K.S_N] = base[K.S_W] = 100  # worker 0 carries the snapshot's stats after a restore
    one = np.zeros(K.STATS_LEN)
    one[K.S_N] = one[K.S_W] = 10
    rows = [CurveRow(1.0, 0, base, point=False), CurveRow(1.0, 1, np.zeros(K.STATS_LEN), point=False),
            CurveRow(2.0, 1, one)]
    pts, _ = curve_points(np.zeros((2, K.STATS_LEN)), rows)
    assert [p.records for _, p in pts] == [110]


def test_ring_in_shared_memory_round_trip_and_overflow():
    with S.SharedState(bits=4, workers=2, partitions=2, curve_rows=4) as a:
        cursors = np.zeros(2, np.int64)
        a.stats[0, K.S_N] = 7
        a.post_curve(0, point=False)
        for k in range(1, 7):  # 6 rows into a ring of 4: the 2 oldest are lost
            a.stats[1, K.S_N] = k
            a.post_curve(1)
        rows, skipped = a.read_curve(cursors)
        assert skipped == 2 and list(cursors) == [1, 6]
        assert [(r.worker, r.stats[K.S_N], r.point) for r in rows] == [
            (0, 7, False), (1, 3, True), (1, 4, True), (1, 5, True), (1, 6, True)]
        assert all(rows[i].time <= rows[i + 1].time for i in range(1, 4))
        a.post_curve(1)
        rows, skipped = a.read_curve(cursors)
        assert len(rows) == 1 and skipped == 0
        with S.Attached(a.handle) as b:  # the worker's view of the same ring
            b.post_curve(0)
        rows, _ = a.read_curve(cursors)
        assert [(r.worker, r.stats[K.S_N]) for r in rows] == [(0, 7)]


def test_no_ring_by_default():
    with S.SharedState(bits=4, workers=2, partitions=2) as a:
        a.post_curve(0)
        assert a.curve.shape == (2, 0, S.CURVE_COLS)
        assert a.read_curve(np.zeros(2, np.int64)) == ([], 0)


class _Msg:
    def __init__(self, value, offset):
        self._v, self._o = value, offset

    def error(self):
        return None

    def value(self):
        return self._v

    def partition(self):
        return 0

    def offset(self):
        return self._o

    def topic(self):
        return "t"


class _Consumer:
    def store_offsets(self, offsets):
        pass

    def get_watermark_offsets(self, tp, cached=True):
        return 0, 0


def test_worker_posts_a_point_each_time_its_count_crosses_a_multiple():
    from shared.frames import encode_train
    from shared.hashspec import Algorithm, SpecId
    from trainer.service import Worker

    spec = SpecId(Algorithm.MMH3_PUBLIC, 4, False, b"\0" * 8)
    settings = TrainerSettings(bits=4, workers=1, curve_records=100)

    def frame(n):
        off = np.arange(0, 2 * n + 1, 2, dtype=np.uint32)
        return encode_train(spec, np.ones(n, np.uint8), off, np.ones(2 * n, np.uint32))

    with S.SharedState(bits=4, workers=1, partitions=1, curve_rows=64) as a:
        w = Worker(settings, a, 0, _Consumer(), None)
        cursors = np.zeros(1, np.int64)
        for off, n in enumerate([60, 30, 30, 250, 10]):  # totals 60, 90, 120, 370, 380
            w.process([_Msg(frame(n), off)])
        rows, _ = a.read_curve(cursors)
        assert [(r.point, int(r.stats[K.S_N])) for r in rows] == [(False, 0), (True, 120), (True, 370)]


def test_curve_records_flag():
    assert TrainerSettings.from_args([]).curve_records == 0
    assert TrainerSettings.from_args(["--curve-records", "1024"]).curve_records == 1024
    with pytest.raises(ConfigError):
        TrainerSettings(curve_records=-1)


def test_rows_after_the_horizon_wait_for_the_next_report():
    """A row stamped earlier but published later than another worker's row still merges in
    time order, as long as it is visible by the time the horizon passes it."""
    rows = random_rows(np.random.default_rng(4), 2, 60, ties=False)
    late = [r for r in rows if r.worker == 0 and 0.1 < r.time]
    first = [r for r in rows if r not in late and r.time <= 0.2]
    curve, got = Curve(2), []
    got += curve.update(first, horizon=0.1)  # worker 0's rows after 0.1 are not visible yet
    got += curve.update([r for r in rows if r not in first])
    same_points(got, brute_force(rows, 2))


def test_supervisor_report_appends_points_in_order_then_the_final_line(tmp_path):
    import json

    from trainer.supervisor import CURVE_FILE, Supervisor

    settings = TrainerSettings(bits=4, workers=2, checkpoint_dir=tmp_path, publish=False, curve_records=10)
    sup = Supervisor(settings)
    with S.SharedState(bits=4, workers=2, partitions=2, curve_rows=64) as a:
        sup.arrays = a
        sup.procs = [object()]  # "workers running": rows newer than the horizon wait
        for w in (0, 1):
            a.post_curve(w, point=False)
        for k in range(1, 4):
            for w in (0, 1):
                a.stats[w, K.S_N] = a.stats[w, K.S_W] = 10 * k
                a.stats[w, K.S_Y] = 5 * k
                a.post_curve(w)
        sup.report()  # everything is younger than HOLD: nothing yet, and no overall line
        path = tmp_path / CURVE_FILE
        assert not path.exists() or path.read_text() == ""
        a.stats[0, K.S_N] = a.stats[0, K.S_W] = 35  # learned past the last point, no new point
        sup.procs = []  # workers stopped: the final report flushes, then adds the overall line
        sup.report()
        lines = [json.loads(x) for x in path.read_text().splitlines()]
        assert [x["records"] for x in lines] == [10, 20, 30, 40, 50, 60, 65]
        assert all(lines[i]["time"] <= lines[i + 1]["time"] for i in range(len(lines) - 2))
        assert lines[0]["positive_rate"] == pytest.approx(0.5)
        sup.arrays = None
