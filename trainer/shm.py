"""The trainer's one shared-memory block: model arrays, per-worker rows, per-partition offsets.

The supervisor alone creates and unlinks the block (:class:`SharedState`, a context manager).
Owner and workers map ``/dev/shm/<name>`` directly (Linux) rather than through
``multiprocessing.shared_memory``, whose resource tracker on Python 3.11 unlinks a block when any
attached process exits. Workers attach through a small frozen :class:`ShmHandle`.
Block names carry the owner's pid; :func:`sweep_stale` unlinks blocks whose owner is gone
(a supervisor killed with SIGKILL cannot unlink its own).
Both ask for huge pages over the model state (it leads the block, so it starts 2 MiB-aligned);
the kernel grants them where ``/dev/shm`` is mounted ``huge=advise`` (see docs/trainer.md).
"""
from __future__ import annotations

import mmap
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np

from shared import hugepages
from shared.processes import pid_alive
from trainer.kernels import STATS_LEN
from trainer.model import STATE_COLUMNS
from trainer.progressive import CurveRow

SHM_DIR = Path("/dev/shm")
PREFIX = "hbtrain_"
_NAME = re.compile(rf"^{PREFIX}(\d+)_[0-9a-f]+$")

# control words (int64)
C_PAUSE, C_EPOCH, C_STOP, C_SPEC_SET, C_SPEC_ALG, C_SPEC_SIGNED, C_SPEC_KEY, C_GO = range(8)
C_ACK = 8  # C_ACK + worker: the last pause epoch the worker acknowledged at a batch boundary
# C_ACK + workers + worker: 1 once the worker is warmed up and waits for C_GO to join the group
# per-worker counters (float64; monotonic across restores, for metrics)
(W_RECORDS, W_FRAMES, W_BYTES, W_BATCHES, W_KERNEL_S, W_BATCH_S, W_DELIVERY_ERR) = range(7)
W_LAT = 8  # latency histogram buckets: kernel then batch, LAT_BUCKETS+1 each (last = +Inf)
LAT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
W_REJECT = W_LAT + 2 * (len(LAT_BUCKETS) + 1)
REJECT_REASONS = ("truncated", "bad_magic", "bad_version", "bad_kind", "wrong_kind", "bad_flags",
                  "bad_spec", "offsets_start", "count_mismatch", "offsets_backwards",
                  "index_out_of_range", "length_mismatch", "bad_label", "bad_weight", "bad_value",
                  "spec_mismatch", "malformed", "other")
W_LEN = W_REJECT + len(REJECT_REASONS)
# per-worker learning-curve ring (``--curve-records``): rows [monotonic time, kind, stats row...];
# one writer (the worker), one reader (the supervisor); ``curve_head[w]`` counts rows ever written
CURVE_ROWS = 4096  # ~16 KiB a row; pages are backed only once written
CV_TIME, CV_KIND, CV_STATS = 0, 1, 2
CURVE_COLS = CV_STATS + STATS_LEN
KIND_START, KIND_POINT = 0, 1


@dataclass(frozen=True, slots=True)
class ShmHandle:
    """Everything a worker needs to attach: name and shape parameters, nothing else."""

    name: str
    bits: int
    workers: int
    partitions: int
    curve_rows: int = 0  # 0: no learning-curve ring

    def layout(self) -> list[tuple[str, tuple[int, ...], type]]:
        return [
            ("state", (1 << self.bits, STATE_COLUMNS), np.float32),
            ("bias", (2,), np.float64),
            ("stats", (self.workers, STATS_LEN), np.float64),
            ("counters", (self.workers, W_LEN), np.float64),
            ("offsets", (self.partitions,), np.int64),
            ("highwater", (self.partitions,), np.int64),
            ("ends", (self.partitions,), np.int64),
            ("control", (C_ACK + 2 * self.workers,), np.int64),
            ("curve_head", (self.workers,), np.int64),
            ("curve", (self.workers, self.curve_rows, CURVE_COLS), np.float64),
        ]

    @property
    def state_bytes(self) -> int:
        _, shape, dt = self.layout()[0]
        return int(np.prod(shape)) * np.dtype(dt).itemsize

    @property
    def size(self) -> int:
        return sum(_aligned(int(np.prod(shape)) * np.dtype(dt).itemsize) for _, shape, dt in self.layout())


def _aligned(n: int) -> int:
    return (n + 63) & ~63


class SharedArrays:
    """Typed views over one mapped block; attribute per array of :meth:`ShmHandle.layout`."""

    state: np.ndarray
    bias: np.ndarray
    stats: np.ndarray
    counters: np.ndarray
    offsets: np.ndarray
    highwater: np.ndarray
    ends: np.ndarray  # per partition: the offset after the last end-of-input marker learned (0: none)
    control: np.ndarray
    curve_head: np.ndarray
    curve: np.ndarray

    def __init__(self, handle: ShmHandle, buf: memoryview | mmap.mmap) -> None:
        self.handle = handle
        pos = 0
        for name, shape, dt in handle.layout():
            count = int(np.prod(shape))
            setattr(self, name, np.frombuffer(buf, dt, count, pos).reshape(shape))
            pos += _aligned(count * np.dtype(dt).itemsize)

    def ready_word(self, worker: int) -> int:
        return C_ACK + self.handle.workers + worker

    def records(self) -> int:
        """Records learned by the model so far (the exactly-once count)."""
        return int(self.stats[:, 0].sum())

    def at_end_markers(self) -> bool:
        """True when the last message learned from every partition read so far was a producer's
        end-of-input marker (``shared.frames.END_HEADER``): all input sent so far is learned."""
        read = self.offsets >= 0  # -1: a partition without a known position
        return bool(read.any()) and bool((self.ends[read] == self.offsets[read]).all())

    def near_end_markers(self) -> bool:
        """True when the last message learned from some partition was an end-of-input marker: the
        input's end is near (the supervisor then ticks faster until the end checkpoint)."""
        read = self.offsets >= 0
        return bool((self.ends[read] == self.offsets[read]).any())

    def post_curve(self, worker: int, point: bool = True) -> None:
        """The worker's half of the curve ring: copy its stats row, then publish the row."""
        rows = self.handle.curve_rows
        if rows == 0:
            return
        head = int(self.curve_head[worker])
        row = self.curve[worker, head % rows]
        row[CV_TIME] = time.monotonic()
        row[CV_KIND] = KIND_POINT if point else KIND_START
        row[CV_STATS:] = self.stats[worker]
        self.curve_head[worker] = head + 1  # after the row (x86 keeps store order)

    def read_curve(self, cursors: np.ndarray) -> tuple[list[CurveRow], int]:
        """The supervisor's half: rows written since ``cursors`` (advanced in place); returns the
        rows and how many were overwritten before they could be read (skipped)."""
        rows, out, skipped = self.handle.curve_rows, [], 0
        if rows == 0:
            return out, 0
        for w in range(self.handle.workers):
            head = int(self.curve_head[w])
            start = max(int(cursors[w]), head - rows)
            copies = [(h, self.curve[w, h % rows].copy()) for h in range(start, head)]
            floor = int(self.curve_head[w]) - rows  # rows below were (maybe) overwritten meanwhile
            for h, row in copies:
                if h < floor:
                    continue
                out.append(CurveRow(float(row[CV_TIME]), w, row[CV_STATS:], bool(row[CV_KIND] == KIND_POINT)))
            skipped += (head - int(cursors[w])) - sum(1 for h, _ in copies if h >= floor)
            cursors[w] = head
        return out, skipped

    def release(self) -> None:
        for name, _, _ in self.handle.layout():
            setattr(self, name, None)


class SharedState:
    """The owner: creates the block on enter (zeroed, offsets -1) and unlinks it on exit."""

    def __init__(self, bits: int, workers: int, partitions: int = 256, curve_rows: int = 0) -> None:
        sweep_stale()
        name = f"{PREFIX}{os.getpid()}_{os.urandom(4).hex()}"
        self.handle = ShmHandle(name, bits, workers, partitions, curve_rows)
        self._map: mmap.mmap | None = None
        self.arrays: SharedArrays | None = None

    def __enter__(self) -> SharedArrays:
        path = SHM_DIR / self.handle.name
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, self.handle.size)
            self._map = mmap.mmap(fd, self.handle.size)
            hugepages.advise(self._map, 0, self.handle.state_bytes)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)
        self.arrays = SharedArrays(self.handle, self._map)
        self.arrays.offsets[:] = -1
        self.arrays.highwater[:] = -1
        return self.arrays

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.arrays is not None:
            self.arrays.release()
            self.arrays = None
        (SHM_DIR / self.handle.name).unlink(missing_ok=True)
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:  # views still referenced somewhere; unmapped when they go
                pass
            self._map = None


class Attached:
    """A worker's mapping of an existing block (context manager; never creates or unlinks)."""

    def __init__(self, handle: ShmHandle) -> None:
        self.handle = handle
        self._map: mmap.mmap | None = None
        self.arrays: SharedArrays | None = None

    def __enter__(self) -> SharedArrays:
        fd = os.open(SHM_DIR / self.handle.name, os.O_RDWR)
        try:
            self._map = mmap.mmap(fd, self.handle.size)
            hugepages.advise(self._map, 0, self.handle.state_bytes)
        finally:
            os.close(fd)
        self.arrays = SharedArrays(self.handle, self._map)
        return self.arrays

    def __exit__(self, *exc: object) -> None:
        if self.arrays is not None:
            self.arrays.release()
            self.arrays = None
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:  # a view still exported somewhere; the OS unmaps at exit
                pass
            self._map = None


def sweep_stale() -> list[str]:
    """Unlink trainer blocks whose owning supervisor no longer runs; returns their names."""
    removed = []
    if not SHM_DIR.is_dir():
        return removed
    for path in SHM_DIR.iterdir():
        m = _NAME.match(path.name)
        if m and not pid_alive(int(m.group(1))):
            try:
                path.unlink()
                removed.append(path.name)
            except FileNotFoundError:
                pass
    return removed
