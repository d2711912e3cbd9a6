"""The supervisor's scale-out half (docs/scale-out.md): deltas exchanged with other instances
through the deltas topic, claim handovers at a rebalance, rollbacks. The workers never know.

A mixin, so that :class:`trainer.supervisor.Supervisor` keeps one job per module: it owns the
attributes used here (the shared arrays, the delta sync, the gate, the workers).
"""
from __future__ import annotations

import logging
import time
from typing import Any

from trainer import shm as S
from trainer.checkpoint import Checkpoint
from trainer.deltas import DeltaSync
from trainer.metrics import TrainerMetrics
from trainer.service import G_ASKED, G_DONE, G_LIMIT, spec_from_control
from trainer.settings import TrainerSettings

log = logging.getLogger("trainer.supervisor")


class ScaleOut:
    """Delta sync steps of the supervisor's loop."""

    s: TrainerSettings
    metrics: TrainerMetrics
    arrays: S.SharedState | None
    sync: DeltaSync | None
    procs: list[Any]
    restarts: int
    version: int
    _gate: Any

    def _pause(self) -> bool:
        raise NotImplementedError

    def _stop_workers(self, timeout: float = 60.0) -> None:
        raise NotImplementedError

    def _start_worker(self, index: int) -> Any:
        raise NotImplementedError

    def _sync_step(self, publish: bool = True, read: bool = False) -> None:
        """Pause between two messages; with ``read`` first read the log to its end (our delta in
        flight gets decided); add remote deltas (and capture ours); resume; publish."""
        assert self.sync is not None and self.arrays is not None
        if not self._pause():
            return
        cause = None
        try:
            if read and not self.sync.catch_up():
                cause = "our delta was rejected"
            elif not (self.sync.step() if publish else self.sync.absorb()):
                cause = "claims conflict"
        finally:
            self.arrays.control[S.C_PAUSE] = 0
        if cause is not None:
            self._rollback(cause)
        elif publish:
            self.sync.publish()

    def _sync_tick(self) -> None:
        """Bound the workers (bounded staleness: at most 2 K records beyond our accepted cut);
        serve a claim handover (a worker's rebalance callback waits: read the log to its end,
        since every member that had partitions revoked published its claims before the group
        could assign them, then sync at once); else read the log, sync when due, and add a
        peer's delta to shared memory as soon as it is read."""
        sy, g, s = self.sync, self._gate, self.s
        assert sy is not None and g is not None
        g[G_LIMIT] = int(sy.stats_copy[0]) + 2 * s.sync_records
        want = [int(g[G_ASKED + 2 * w]) for w in range(s.workers)]
        if any(int(g[G_DONE + 2 * w]) < want[w] for w in range(s.workers)):
            try:
                self._sync_step(read=True)
            finally:
                for w in range(s.workers):
                    g[G_DONE + 2 * w] = max(int(g[G_DONE + 2 * w]), want[w])
        elif not sy.poll():
            self._rollback("our delta was rejected")
        elif sy.due(s.sync_seconds, s.sync_records):
            self._sync_step()
        elif sy.queue:
            self._sync_step(publish=False)

    def _rollback(self, cause: str) -> None:
        """Our unpublished (or rejected) learning overlaps an accepted delta: relearn from the cut."""
        assert self.sync is not None and self.arrays is not None
        log.warning("deltas: rolling back to the accepted cut (%s); restarting workers", cause)
        self._stop_workers()
        self.sync.rollback()
        self.arrays.control[S.C_GO] = 0
        self.restarts += 1
        self.metrics.restarts.labels("rollback").inc()
        self.procs = [self._start_worker(i) for i in range(self.s.workers)]

    def _final_sync(self) -> None:
        """Stopping: the last delta (exact) while the workers are paused, so whoever takes their
        partitions starts at our final claims; then wait for its verdict, so the cut has it."""
        assert self.sync is not None
        released = bool(self.procs) and bool(self.arrays.control[S.C_GO])  # type: ignore[union-attr]
        if not (released and self._pause()):
            self._stop_workers()  # not in the group yet, or a worker died: nothing to pause
        if self.sync.catch_up() and self.sync.step(exact=True):
            self.sync.publish()
        else:
            log.warning("deltas: final delta conflicts; its records are left to the other instances")
        self._stop_workers()
        self.sync.catch_up()

    def _capture_cut(self) -> Checkpoint | None:
        assert self.sync is not None and self.arrays is not None
        sy = self.sync
        cut = sy.cut()
        if cut is None:
            return None
        return Checkpoint(self.version + 1, self.s.kafka.topics.train, dict(sy.ledger.ends),
                          sy.copy.copy(), sy.copy_bias.copy(), sy.stats_copy.copy(), self.s.hyper,
                          spec_from_control(self.arrays.control, self.s.bits), time.time(), cut)

