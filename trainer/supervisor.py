"""The supervisor: owns the shared block, runs the workers, checkpoints, publishes, recovers.

Exactly-once protocol (the supervisor's half; docs/trainer.md has the whole):

* Start: load the newest snapshot into shared memory (weights, optimizer state, bias, merged
  progressive stats, record count, every partition's next offset, the adopted spec), then start
  the workers, which seek each assigned partition to the shared offset.
* Checkpoint (every K records or T seconds): raise the pause word with a new epoch; each worker
  acknowledges between two messages and waits; copy all arrays; lower the word; write the
  copy atomically; publish the model. The copy is consistent because no worker is mid-batch.
* A worker that exits non-zero (killed, crashed) may have updated weights without recording its
  offsets: stop every worker, reload the last snapshot into shared memory, start fresh workers.
  A worker that exits cleanly (SIGTERM) left a consistent state and is merely replaced.
* Stop (SIGTERM, --until-caught-up, max_records): stop the workers (each finishes its batch and
  leaves the group), take a final checkpoint, unlink the shared memory.
"""
from __future__ import annotations

import logging
import dataclasses
import json
import multiprocessing as mp
import os
import time
from contextlib import ExitStack
from typing import Any, Callable

import numpy as np
from confluent_kafka import Consumer, TopicPartition

from shared import hugepages
from shared.errors import ConfigError, CrashLoop
from shared.clients import ensure_topics
from trainer import shm as S
from trainer.checkpoint import Checkpoint, load_latest, write_checkpoint
from trainer.deltas import TOPIC_CONFIG, DeltaSync, default_instance_id
from trainer.base import load_base, publish_model
from trainer.metrics import TrainerMetrics
from trainer.progressive import Curve, Progress, merge, summarize
from trainer.scaleout import ScaleOut
from trainer.service import gate_len, spec_from_control, spec_to_control
from trainer.service import worker_main
from trainer.settings import TrainerSettings

log = logging.getLogger(__name__)
_TICK = 0.02
# the tick for up to _END_WINDOW s after a partition reached a producer's end-of-input marker
# while records wait for their checkpoint: the end checkpoint then waits ~1 ms for the tick, not
# ~10 (bounded: with key partitioning the idle partitions sit at old markers all along)
_END_TICK, _END_WINDOW = 0.002, 0.5
# a restart after the first of several worker deaths in a row waits BASE * 2**(n-2) s, at most CAP
_BACKOFF_BASE, _BACKOFF_CAP = 1.0, 30.0
CURVE_FILE = "progress.jsonl"  # progressive learning curve, appended at each report


class Supervisor(ScaleOut):
    def __init__(self, settings: TrainerSettings, metrics: TrainerMetrics | None = None,
                 publisher_factory: Callable[[], Any] | None = None) -> None:
        self.s = settings
        self.metrics = metrics or TrainerMetrics()
        self._publisher_factory = publisher_factory
        self._stop = False
        self._ctx = mp.get_context("spawn")
        self.procs: list[Any] = []
        self.arrays: S.SharedArrays | None = None
        self.last: Checkpoint | None = None
        self.version = 0
        self.restarts = 0
        self._deaths = 0  # worker deaths since the last snapshot written
        self._publisher: Any = None
        self._prev_stats: np.ndarray | None = None
        self._last_curve_records = 0
        self._curve = Curve(settings.workers) if settings.curve_records else None
        self.sync: DeltaSync | None = None  # --sync-deltas (docs/scale-out.md)
        # workers' rebalance callbacks ask for a claim handover; their record bound (service.py)
        self._gate = self._ctx.Array("q", gate_len(settings.workers), lock=False) if settings.sync_deltas else None

    def stop(self) -> None:
        self._stop = True

    # --- state in and out of shared memory ---
    def _restore(self, ckpt: Checkpoint | None) -> None:
        a = self.arrays
        assert a is not None
        a.control[S.C_SPEC_SET] = 0
        a.stats[:] = 0.0
        a.offsets[:] = -1
        if ckpt is None:
            a.state[:] = 0.0
            a.bias[:] = 0.0
        else:
            a.state[:] = ckpt.state
            a.bias[:] = ckpt.bias
            a.stats[0] = ckpt.stats
            for p, off in ckpt.offsets.items():
                a.offsets[p] = off
        spec = ckpt.spec if ckpt is not None and ckpt.spec is not None else self.s.spec
        if spec is not None:
            spec_to_control(a.control, spec)
        self._prev_stats = merge(a.stats)

    def _check_compatible(self, ckpt: Checkpoint) -> None:
        if ckpt.bits != self.s.bits:
            raise ConfigError(f"snapshot has {ckpt.bits} bits, --bits is {self.s.bits}")
        if ckpt.hyper.optimizer is not self.s.hyper.optimizer:
            raise ConfigError(f"snapshot was learned with {ckpt.hyper.optimizer.value}, "
                              f"not {self.s.hyper.optimizer.value}")
        if ckpt.spec is not None and self.s.spec is not None and ckpt.spec != self.s.spec:
            raise ConfigError("snapshot spec differs from the spec given by flags")

    def _capture(self) -> Checkpoint:
        a = self.arrays
        assert a is not None
        offsets = {p: int(o) for p, o in enumerate(a.offsets) if o >= 0}
        return Checkpoint(self.version + 1, self.s.kafka.topics.train, offsets, a.state.copy(),
                          a.bias.copy(), merge(a.stats), self.s.hyper,
                          spec_from_control(a.control, self.s.bits), time.time())

    # --- workers ---
    def _start_worker(self, index: int) -> Any:
        assert self.arrays is not None
        self.arrays.control[self.arrays.ready_word(index)] = 0
        p = self._ctx.Process(target=worker_main, name=f"trainer-worker-{index}",
                              args=(self.s, self.arrays.handle, index, os.getpid(), self._gate),
                              daemon=True)
        p.start()
        return p

    def _stop_workers(self, timeout: float = 60.0) -> None:
        a = self.arrays
        assert a is not None
        a.control[S.C_STOP] = 1
        a.control[S.C_PAUSE] = 0
        deadline = time.monotonic() + timeout
        for p in self.procs:
            p.join(max(0.1, deadline - time.monotonic()))
            if p.is_alive():
                log.warning("worker %s did not stop in time; killing it", p.name)
                p.kill()
                p.join()
        self.procs = []
        a.control[S.C_STOP] = 0

    def _recover(self, cause: str) -> None:
        """A worker died dirty: discard shared state back to the last snapshot, restart all.

        Deaths with no snapshot written between them are counted: the restarts after the first
        back off, and past ``max_restarts`` the trainer stops with ``CrashLoop`` rather than
        restart forever (each round re-reading, and re-learning, the same records)."""
        self._deaths += 1
        self.metrics.deaths.set(self._deaths)
        version = self.last.version if self.last else 0
        if self._deaths > self.s.max_restarts:
            raise CrashLoop(f"workers died {self._deaths} times in a row with no snapshot written between "
                            f"(last: {cause}); giving up (--max-restarts {self.s.max_restarts}); the "
                            f"snapshot on disk is version {version}; see the worker log lines above")
        delay = 0.0 if self._deaths == 1 else min(_BACKOFF_CAP, _BACKOFF_BASE * 2.0 ** (self._deaths - 2))
        log.warning("worker died (%s): restoring snapshot version %d and restarting workers%s", cause,
                    version, f" in {delay:g} s ({self._deaths} deaths since the last snapshot)" if delay else "")
        self._stop_workers()
        if self.sync is not None:
            self.sync.rollback()  # the accepted cut plus every accepted delta read since
        else:
            self._restore(self.last)
        self.arrays.control[S.C_GO] = 0  # type: ignore[union-attr]
        self.restarts += 1
        self.metrics.restarts.labels(cause).inc()
        end = time.monotonic() + delay
        while not self._stop and time.monotonic() < end:  # SIGTERM still ends the run at once
            time.sleep(0.05)
        if not self._stop:
            self.procs = [self._start_worker(i) for i in range(self.s.workers)]

    def _release_when_ready(self) -> bool:
        """Let the workers join the group together, once all are warmed up; True once released."""
        a = self.arrays
        assert a is not None
        if not a.control[S.C_GO] and all(a.control[a.ready_word(i)] for i in range(len(self.procs))):
            a.control[S.C_GO] = 1
            log.info("%d workers ready; joining the consumer group", len(self.procs))
        return bool(a.control[S.C_GO])

    def _check_workers(self) -> None:
        for i, p in enumerate(self.procs):
            if p.is_alive():
                continue
            if p.exitcode == 0:  # clean exit: state is consistent, just replace it
                log.warning("worker %d exited cleanly; replacing it", i)
                self.metrics.restarts.labels("clean_exit").inc()
                self.procs[i] = self._start_worker(i)
            else:
                self._recover(f"exit code {p.exitcode}")
                return

    # --- checkpoints ---
    def _pause(self) -> bool:
        """Pause every worker between two messages; False if one died meanwhile."""
        c = self.arrays.control  # type: ignore[union-attr]
        epoch = int(c[S.C_EPOCH]) + 1
        c[S.C_EPOCH] = epoch
        c[S.C_PAUSE] = 1
        while True:
            if any(not p.is_alive() for p in self.procs):
                c[S.C_PAUSE] = 0
                return False
            if all(int(c[S.C_ACK + i]) == epoch for i in range(len(self.procs))):
                return True
            time.sleep(0.0005)

    def checkpoint(self, live: bool = True, trigger: str = "final") -> Checkpoint | None:
        """Snapshot, write and publish the model; ``trigger`` (records, interval, idle, end, final) goes to
        the log line and the ``hb_trainer_checkpoints{trigger}`` counter."""
        t0 = time.perf_counter()
        if self.sync is not None:  # the accepted cut: no pause needed, never a torn state
            ckpt = self._capture_cut()
            if ckpt is None:
                return None
        else:
            if live and not self._pause():
                return None
            ckpt = self._capture()
            if live:
                self.arrays.control[S.C_PAUSE] = 0  # type: ignore[union-attr]
        last = self.last
        if last is not None and (ckpt.records, ckpt.offsets, ckpt.spec, ckpt.sync) == (
                last.records, last.offsets, last.spec, last.sync):
            return last  # nothing learned since: no new version
        if self._publisher is not None:
            ckpt = dataclasses.replace(ckpt, version=max(ckpt.version, self._publisher.last_version + 1))
        write_checkpoint(self.s.checkpoint_dir, ckpt, self.s.keep_snapshots)
        self.version, self.last = ckpt.version, ckpt
        self._deaths = 0
        self.metrics.deaths.set(0)
        dt = time.perf_counter() - t0
        self.metrics.checkpointed(ckpt.version, dt, ckpt.records, trigger)
        log.info("checkpoint version %d (%s): %d records, %d partitions, %.3f s",
                 ckpt.version, trigger, ckpt.records, len(ckpt.offsets), dt)
        self._publish(ckpt)
        return ckpt

    def _publish(self, ckpt: Checkpoint) -> None:
        if self._publisher is None or ckpt.spec is None:
            return
        if self.sync is not None and not self.sync.leader():
            return  # one publisher: the smallest live instance id (docs/scale-out.md)
        publish_model(self._publisher, ckpt)  # a sync cut also carries its hb.deltas position

    def report(self) -> None:
        if self._curve is not None:  # the workers' curve rows first: they predate ``cur`` below
            horizon = time.monotonic() - self._curve.HOLD if self.procs else None  # None: flush
            rows, skipped = self.arrays.read_curve(self._curve.cursors)  # type: ignore[union-attr]
            for t, point in self._curve.update(rows, skipped, horizon):
                self._last_curve_records = point.records
                self._append_curve(point, time.time() - time.monotonic() + t)
        cur = merge(self.arrays.stats)  # type: ignore[union-attr]
        prev = self._prev_stats if self._prev_stats is not None else np.zeros_like(cur)
        overall = summarize(cur)
        recent = summarize(cur - prev) if cur[0] >= prev[0] else overall
        self._prev_stats = cur
        self.metrics.progress("overall", overall)
        self.metrics.progress("recent", recent)
        log.info("progressive overall: %s | recent: %s", overall.line(), recent.line())
        # with the per-worker curve on, its points replace this line but for the final report
        if overall.records and overall.records != self._last_curve_records and (
                self._curve is None or not self.procs):
            self._last_curve_records = overall.records
            self._append_curve(overall)

    def _append_curve(self, overall: Progress, at: float | None = None) -> None:
        """The learning curve: one JSON line per report with new records, beside the snapshots."""
        self.s.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"time": time.time() if at is None else at, **dataclasses.asdict(overall)})
        with (self.s.checkpoint_dir / CURVE_FILE).open("a") as fh:
            fh.write(line + "\n")

    # --- end offsets for --until-caught-up ---
    def _end_offsets(self) -> dict[int, tuple[int, int]]:
        c = Consumer({**self.s.kafka.base_config(), "group.id": f"{self.s.group}.probe"})
        try:
            topic = self.s.kafka.topics.train
            md = c.list_topics(topic, timeout=30)
            parts = sorted(md.topics[topic].partitions)
            return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=30) for p in parts}
        finally:
            c.close()

    def caught_up(self, ends: dict[int, tuple[int, int]]) -> bool:
        a = self.arrays
        assert a is not None
        return all(high <= low or int(a.offsets[p]) >= high for p, (low, high) in ends.items())

    # --- the loop ---
    def run(self, max_records: int | None = None, timeout: float | None = None) -> Checkpoint | None:
        """Train until stopped, caught up, ``max_records`` learned or ``timeout``; final snapshot."""
        s = self.s
        ensure_topics(s.kafka, {s.kafka.topics.train: 4, s.kafka.topics.dlq: 1})
        if s.sync_deltas:
            ensure_topics(s.kafka, {s.kafka.topics.deltas: 1}, configs={s.kafka.topics.deltas: TOPIC_CONFIG})
        deadline = None if timeout is None else time.monotonic() + timeout
        with ExitStack() as stack:
            self.arrays = stack.enter_context(S.SharedState(
                s.bits, s.workers, s.max_partitions, S.CURVE_ROWS if s.curve_records else 0))
            stack.callback(setattr, self, "arrays", None)
            ckpt = load_latest(s.checkpoint_dir)
            if ckpt is None and s.sync_deltas:  # a new instance: the newest published cut
                ckpt = load_base(s.kafka, s.kafka.topics.train)
            if ckpt is not None:
                self._check_compatible(ckpt)
                self.version = ckpt.version
                log.info("resuming from snapshot version %d (%d records)", ckpt.version, ckpt.records)
            self.last = ckpt
            self._restore(ckpt)
            huge = hugepages.huge_bytes(self.arrays.state)
            self.metrics.state_huge.set(huge)
            log.info("model state: %d of %d MiB on huge pages (%s huge=%s; docs/trainer.md)", huge >> 20,
                     self.arrays.state.nbytes >> 20, S.SHM_DIR, hugepages.tmpfs_mode(str(S.SHM_DIR)))
            if s.sync_deltas:
                prior = (ckpt.sync or {}).get("instance") if ckpt is not None else None
                instance = s.instance_id or prior or default_instance_id()
                self.sync = DeltaSync(s, self.arrays, self.metrics, instance)
                stack.callback(setattr, self, "sync", None)
                stack.callback(self.sync.close)
                self.sync.restore(ckpt)
            collector = self.metrics.attach(self.arrays, s.kafka.topics.train)
            stack.callback(self.metrics.registry.unregister, collector)
            self.metrics.serve(s.metrics_port)
            if s.publish:
                if self._publisher_factory is not None:
                    self._publisher = self._publisher_factory()
                else:
                    from shared.models import ModelPublisher
                    self._publisher = ModelPublisher(s.kafka)
                stack.callback(self._publisher.close)
            ends = self._end_offsets() if s.until_caught_up else None
            self.procs = [self._start_worker(i) for i in range(s.workers)]
            stack.callback(lambda: self.procs and self._stop_workers())
            last_ckpt_t = last_report_t = last_moved_t = time.monotonic()
            last_ckpt_n = last_n = self.arrays.records()
            tick, near_since = _TICK, None
            while not self._stop:
                time.sleep(tick)
                self._check_workers()
                released = self._release_when_ready()  # no checkpoint while workers wait to join
                n = self.arrays.records()
                if ends is not None and self.caught_up(ends):
                    log.info("caught up with the end offsets at start")
                    break
                if max_records is not None and n >= max_records:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    break
                now = time.monotonic()
                if released and self.sync is not None:
                    self._sync_tick()
                if n != last_n:
                    last_n, last_moved_t = n, now
                trigger = ("records" if n - last_ckpt_n >= s.checkpoint_records
                           else "interval" if now - last_ckpt_t >= s.checkpoint_seconds
                           else "idle" if 0 < s.checkpoint_idle_seconds <= now - last_moved_t and n > last_ckpt_n
                           else "end" if s.checkpoint_at_end and n > last_ckpt_n and self.arrays.at_end_markers()
                           else None)
                if released and trigger is not None:
                    if self.checkpoint(trigger=trigger) is not None:
                        last_ckpt_n, last_ckpt_t = n, now
                near = s.checkpoint_at_end and n > last_ckpt_n and self.arrays.near_end_markers()
                near_since = (near_since or now) if near else None
                tick = _END_TICK if near and now - near_since < _END_WINDOW else _TICK
                if now - last_report_t >= s.report_seconds:
                    self.report()
                    last_report_t = now
            if self.sync is not None:
                self._final_sync()
            self._stop_workers()
            self.report()
            return self.checkpoint(live=False) or self.last
