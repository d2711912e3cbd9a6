"""The worker loop: consume a batch of frames, learn each into the shared arrays, record offsets.

Exactly-once protocol (the worker's half; docs/trainer.md has the whole):

1. Right after the kernel call for a message, the worker writes ``offset + 1`` into the shared
   per-partition ``offsets`` array. The shared model and the shared offsets therefore agree at
   every message boundary, except inside the few instructions between the two writes.
2. On assignment (``on_assign``, which runs inside ``consume``, i.e. at a batch boundary) each
   partition starts at the shared offset, or at the beginning when there is none. So a
   partition handed over by a rebalance resumes exactly where the shared model stands.
3. Between two messages (at the top of every loop turn and inside a batch, so a pause waits
   for one frame, not a batch of them) a worker that sees the pause word set acknowledges the
   pause epoch and waits; the supervisor snapshots (or syncs deltas) while all are paused.
4. A worker killed mid-batch may leave model and offsets disagreeing; the supervisor then stops
   all workers, reloads the last snapshot into shared memory and starts fresh workers, so the
   torn state is discarded. Offsets committed to Kafka are for lag monitoring only.
"""
from __future__ import annotations

import bisect
import gc
import logging
import os
import signal
import time
from typing import Any

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, KafkaError as ConfluentKafkaError, TopicPartition

from shared.deadletter import send_dead_letter
from shared.errors import FrameError
from shared.frames import END_HEADER, Kind, decode, require_spec
from shared.hashspec import Algorithm, SpecId
from shared.processes import parent_death_signal
from trainer import kernels as K
from trainer import shm as S
from trainer.settings import TrainerSettings

log = logging.getLogger(__name__)
SERVICE = "trainer"
HANDOVER_TIMEOUT = 60.0  # seconds a rebalance callback waits for the supervisor's claim handover
# scale-out gate shared with the supervisor (a small lock-free multiprocessing array of int64):
# the record bound, then per worker the handovers it asked for and the handovers done for it.
# One writer per word, so no lock (a locked Array is a named semaphore, which a SIGKILLed
# process group leaves behind in /dev/shm).
G_LIMIT, G_ASKED, G_DONE = 0, 1, 2  # G_ASKED/G_DONE + 2 * worker


def gate_len(workers: int) -> int:
    return 1 + 2 * workers


def die_with_parent() -> None:
    """Linux: have the kernel SIGKILL this worker when the supervisor dies, so no orphan learns."""
    request = parent_death_signal(signal.SIGKILL)
    if request is not None:
        request()


def spec_from_control(control: np.ndarray, bits: int) -> SpecId | None:
    if not control[S.C_SPEC_SET]:
        return None
    kid = int(control[S.C_SPEC_KEY]).to_bytes(8, "little", signed=True)
    return SpecId(Algorithm(int(control[S.C_SPEC_ALG])), bits, bool(control[S.C_SPEC_SIGNED]), kid)


def spec_to_control(control: np.ndarray, spec: SpecId) -> None:
    control[S.C_SPEC_ALG] = int(spec.algorithm)
    control[S.C_SPEC_SIGNED] = int(spec.signed)
    control[S.C_SPEC_KEY] = int.from_bytes(spec.key_id, "little", signed=True)
    control[S.C_SPEC_SET] = 1


class Worker:
    """One consumer-group member learning into shared arrays; ``run`` returns when stopped."""

    def __init__(self, settings: TrainerSettings, arrays: S.SharedArrays, index: int,
                 consumer: Any, dlq_producer: Any, parent_pid: int | None = None,
                 gate: Any = None) -> None:
        self.s, self.a, self.index = settings, arrays, index
        self.gate = gate  # scale-out only (--sync-deltas): G_* words shared with the supervisor
        self.consumer, self.dlq = consumer, dlq_producer
        self.topic = settings.kafka.topics.train
        self.hp = settings.hyper.array()
        self.kernel = settings.hyper.kernel
        # only SGD's rate reads the record count (one shared-memory sum per frame otherwise spent)
        self._needs_t = self.kernel is K.sgd_frame and bool(self.hp[K.HP_DECAY])
        self.stats = arrays.stats[index]
        self.counters = arrays.counters[index]
        self.spec = spec_from_control(arrays.control, settings.bits)
        self.parent_pid = parent_pid
        self.assigned: set[int] = set()
        self._stop = False
        # learning curve: a point each time this worker's own record count crosses a multiple
        self.curve_every = settings.curve_records if arrays.handle.curve_rows else 0
        if self.curve_every:
            arrays.post_curve(index, point=False)  # the baseline, before any record is learned
            self._next_curve = self._after(self.stats[K.S_N])

    def _after(self, records: float) -> float:
        return (int(records) // self.curve_every + 1) * self.curve_every

    def stop(self) -> None:
        self._stop = True

    def _stopping(self) -> bool:
        if self.parent_pid is not None and os.getppid() != self.parent_pid:
            return True
        return self._stop or bool(self.a.control[S.C_STOP])

    # --- rebalance callbacks: they run inside consume(), i.e. at a batch boundary ---
    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._hand_over()  # the previous owners' claims are in the log: start where they ended
        for tp in partitions:
            off = int(self.a.offsets[tp.partition])
            tp.offset = off if off >= 0 else OFFSET_BEGINNING
            self.assigned.add(tp.partition)
        log.info("worker %d assigned partitions %s", self.index, sorted(tp.partition for tp in partitions))
        consumer.assign(partitions)

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._hand_over()  # our claims go into the log before the group can move the partitions
        self._on_lost(consumer, partitions)

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.assigned.discard(tp.partition)
        log.info("worker %d revoked partitions %s", self.index, sorted(tp.partition for tp in partitions))

    def subscribe(self) -> None:
        self.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_lost)

    def _hand_over(self) -> None:
        """Scale-out (docs/scale-out.md): block this rebalance callback until the supervisor has
        settled the claims (published ours at a revoke; read everyone's and moved the shared
        offsets to the accepted ends at an assign). An eager rebalance assigns only after every
        member has rejoined, i.e. after every revoke callback returned, so the new owner of a
        partition starts exactly where its old owner's claim ended: no conflict, no rollback.
        Not when stopping (the supervisor's final delta covers that) nor for lost partitions
        (another member may own them already); a timeout falls back to conflict detection."""
        g = self.gate
        if g is None or self._stopping():
            return
        asked, done = G_ASKED + 2 * self.index, G_DONE + 2 * self.index
        want = int(g[asked]) + 1
        g[asked] = want
        if not self._wait(lambda: g[done] < want, HANDOVER_TIMEOUT):
            log.warning("worker %d: no claim handover within %.0f s", self.index, HANDOVER_TIMEOUT)

    def _wait(self, blocked: Any, timeout: float | None = None) -> bool:
        """Wait while ``blocked()``, between two messages, so acknowledging pauses meanwhile;
        False on timeout. Returns early when stopping."""
        c = self.a.control
        deadline = None if timeout is None else time.monotonic() + timeout
        while blocked() and not self._stopping():
            if c[S.C_PAUSE]:
                c[S.C_ACK + self.index] = int(c[S.C_EPOCH])
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.001)
        return True

    def _pause_if_asked(self) -> None:
        c = self.a.control
        if not c[S.C_PAUSE]:
            return
        epoch = int(c[S.C_EPOCH])
        c[S.C_ACK + self.index] = epoch
        while c[S.C_PAUSE] and int(c[S.C_EPOCH]) == epoch and not self._stopping():
            time.sleep(0.001)

    def run(self, max_records: int | None = None, timeout: float | None = None) -> int:
        """Learn until stopped (or ``max_records`` learned, or ``timeout`` s); returns records."""
        deadline = None if timeout is None else time.monotonic() + timeout
        learned = 0
        while not self._stopping():
            self._pause_if_asked()
            if self._stopping():
                break
            if deadline is not None and time.monotonic() > deadline:
                break
            if max_records is not None and learned >= max_records:
                break
            msgs = self._next_batch()
            if msgs:
                learned += self.process(msgs)
        return learned

    def _next_batch(self) -> list[Any]:
        """Whatever the fetcher already holds (up to ``batch_messages``), without waiting for a
        full batch (``consume`` would block until the batch fills or the timeout passes, idling
        the worker while the fetcher still delivers); only when nothing is there, wait for one."""
        msgs = self.consumer.consume(self.s.batch_messages, 0)
        if not msgs:
            msgs = self.consumer.consume(1, self.s.poll_timeout)
        return msgs

    def process(self, msgs: list[Any]) -> int:
        """One batch: learn every frame, recording each partition's next offset right after."""
        t0 = time.perf_counter()
        learned, kernel_s, dead, nbytes = 0, 0.0, False, 0
        stored: dict[int, int] = {}
        for m in msgs:
            if self.a.control[S.C_PAUSE]:  # model and offsets agree between messages: pause here
                self._pause_if_asked()
                if self._stopping():
                    break  # the rest of the batch is not learned and its offsets stay put
            if self.gate is not None and self.a.records() >= self.gate[G_LIMIT]:
                # bounded staleness: wait until the supervisor has our learning accepted in the log
                self._wait(lambda: self.a.records() >= self.gate[G_LIMIT])
                if self._stopping():
                    break
            err = m.error()
            if err is not None:
                if err.code() != ConfluentKafkaError._PARTITION_EOF:
                    log.warning("consume error: %s", err)
                continue
            value = m.value() or b""
            nbytes += len(value)
            end = False
            try:
                frame = decode(value, expect=Kind.TRAIN)
                self._check_spec(frame)
            except FrameError as exc:
                self._reject(m, exc)
                dead = True
            else:
                k0 = time.perf_counter()
                if self._needs_t:
                    self.hp[K.HP_T] = self.a.records()
                self.kernel(self.a.state, self.a.bias, frame.labels, frame.offsets, frame.indices,
                            K.EMPTY_F32 if frame.values is None else frame.values,
                            K.EMPTY_F32 if frame.weights is None else frame.weights, self.hp, self.stats)
                kernel_s += time.perf_counter() - k0
                learned += frame.n_records
                end = frame.n_records == 0 and _is_end_marker(m)
                self.counters[S.W_FRAMES] += 1
                self._observe_latency(0, time.perf_counter() - k0)
                if self.curve_every and self.stats[K.S_N] >= self._next_curve:
                    self.a.post_curve(self.index)
                    self._next_curve = self._after(self.stats[K.S_N])
            if end:
                self.a.ends[m.partition()] = m.offset() + 1
            self.a.offsets[m.partition()] = m.offset() + 1  # the batch boundary of this message
            stored[m.partition()] = m.offset() + 1
        if dead:
            self.dlq.flush(10.0)
        if stored:
            self._store(stored)
        c = self.counters
        c[S.W_RECORDS] += learned
        c[S.W_BYTES] += nbytes
        c[S.W_BATCHES] += 1
        c[S.W_KERNEL_S] += kernel_s
        dt = time.perf_counter() - t0
        c[S.W_BATCH_S] += dt
        self._observe_latency(1, dt)
        return learned

    def _observe_latency(self, which: int, seconds: float) -> None:
        base = S.W_LAT + which * (len(S.LAT_BUCKETS) + 1)
        self.counters[base + bisect.bisect_left(S.LAT_BUCKETS, seconds)] += 1

    def _store(self, stored: dict[int, int]) -> None:
        tps = [TopicPartition(self.topic, p, o) for p, o in stored.items()]
        try:
            self.consumer.store_offsets(offsets=tps)
        except Exception as exc:  # noqa: BLE001 - revoked meanwhile: monitoring only, ignore
            log.debug("store_offsets failed: %s", exc)
        for p in stored:
            try:
                _, high = self.consumer.get_watermark_offsets(TopicPartition(self.topic, p), cached=True)
                self.a.highwater[p] = high
            except Exception:  # noqa: BLE001 - lag is best effort
                pass

    def _check_spec(self, frame: Any) -> None:
        if self.spec is None:
            self.spec = spec_from_control(self.a.control, self.s.bits)
        if self.spec is None and frame.spec.bits == self.s.bits:
            # adopt (a near-simultaneous adoption by two workers is a documented, benign race:
            # both frames came from the same topic; the first valid one wins in practice)
            spec_to_control(self.a.control, frame.spec)
            self.spec = frame.spec
            log.warning("no --key-id given: adopted the spec of the first valid frame (key id %s); "
                        "pass --key-id in production so a foreign producer cannot pick the key",
                        frame.spec.key_id_hex)
        require_spec(frame, self.spec if self.spec is not None else
                     SpecId(frame.spec.algorithm, self.s.bits, frame.spec.signed, frame.spec.key_id))

    def _reject(self, msg: Any, exc: FrameError) -> None:
        reason = exc.reason if exc.reason in S.REJECT_REASONS else "other"
        self.counters[S.W_REJECT + S.REJECT_REASONS.index(reason)] += 1
        log.warning("rejected frame at %s[%d]@%d: %s", msg.topic(), msg.partition(), msg.offset(), reason)
        send_dead_letter(self.dlq, self.s.kafka.topics.dlq, msg, reason, str(exc), SERVICE)

    def close(self) -> None:
        """Leave the group (revoke runs), flush dead letters."""
        try:
            self.consumer.close()
        finally:
            self.dlq.flush(10.0)


def _is_end_marker(m: Any) -> bool:
    return any(k == END_HEADER for k, _ in m.headers() or ())


def warm_up(kernel: Any, hp: np.ndarray) -> None:
    """Load (or compile) the kernel for frame-view argument types before joining the group, so
    the first batch does not stall heartbeats; runs on scratch arrays, never the shared ones."""
    from shared.frames import encode_train

    spec = SpecId(Algorithm.MMH3_PUBLIC, 4, False, b"\0" * 8)
    off, idx = np.array([0, 2], np.uint32), np.array([1, 3], np.uint32)
    for vals in (None, np.ones(2, np.float32)):
        f = decode(encode_train(spec, np.ones(1, np.uint8), off, idx, values=vals))
        kernel(np.zeros((16, 2), np.float32), np.zeros(2), f.labels, f.offsets, f.indices,
               K.EMPTY_F32 if f.values is None else f.values, K.EMPTY_F32, hp.copy(),
               np.zeros(K.STATS_LEN))


def worker_main(settings: TrainerSettings, handle: S.ShmHandle, index: int, parent_pid: int,
                gate: Any = None) -> None:
    """Process entry point (spawned): attach, consume until the stop word or a signal, leave."""
    die_with_parent()
    if os.getppid() != parent_pid:
        return
    from shared.allocator import reuse_large_buffers
    from shared.clients import make_producer
    from shared.logs import setup_logging
    from shared.startup import skip_numba_blas_probe
    from confluent_kafka import Consumer

    setup_logging()
    reuse_large_buffers()  # before librdkafka's first fetch buffer (shared/allocator.py)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides; Ctrl-C reaches it too
    skip_numba_blas_probe()  # ~0.2 s less start-up per worker where SciPy is installed
    warm_up(settings.hyper.kernel, settings.hyper.array())
    # what the imports and numba's compiler built lives as long as the worker: out of the
    # collector's sight, or its full collections walk it again while the worker learns
    # (gc_collect_main and helpers were 14% of the host's CPU samples early in a 2-worker run)
    gc.collect()
    gc.freeze()
    with S.Attached(handle) as arrays:
        consumer = Consumer(settings.consumer_config())
        row = arrays.counters[index]

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                row[S.W_DELIVERY_ERR] += 1
                log.warning("dead letter not delivered: %s", err)

        worker = Worker(settings, arrays, index, consumer,
                        make_producer(settings.kafka, on_delivery=delivered), parent_pid=parent_pid,
                        gate=gate)
        signal.signal(signal.SIGTERM, lambda *_: worker.stop())
        # join the group only when every worker is ready: one rebalance instead of N
        arrays.control[arrays.ready_word(index)] = 1
        while not arrays.control[S.C_GO] and not worker._stopping():
            time.sleep(0.005)
        worker.subscribe()
        try:
            worker.run()
        finally:
            worker.close()
            del worker
