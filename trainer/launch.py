"""Python API around the trainer for demos, tests and benchmarks.

``start_trainer`` runs ``python -m trainer`` as a subprocess (its own process group, so a test
can SIGKILL it like an operator would); ``load_latest`` (re-exported) reads its newest snapshot;
``produce_synthetic`` fills a topic with random training frames from a known true model.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence, TypeVar

import numpy as np

from shared.clients import make_producer
from shared.frames import encode_train
from shared.hashspec import SpecId
from shared.settings import KafkaSettings
from trainer.checkpoint import load_latest, read_records, snapshot_files  # noqa: F401 - load_latest re-exported

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def start_trainer(args: Sequence[str], env: dict[str, str] | None = None, log_path: Path | None = None,
                  python: str = sys.executable) -> subprocess.Popen:
    """Start ``python -m trainer ARGS``; stdout/stderr go to ``log_path`` (or are inherited)."""
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), full_env.get("PYTHONPATH")]))
    out = open(log_path, "ab") if log_path else None
    try:
        return subprocess.Popen([python, "-m", "trainer", *args], env=full_env, cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT if out else None,
                                start_new_session=True)
    finally:
        if out:
            out.close()


def synthetic_frames(spec: SpecId, n_records: int, per_frame: int = 5000, features: int = 20,
                     seed: int = 0, signed: bool = False) -> Iterator[bytes]:
    """Random rows over ``2**bits`` indices; labels drawn from a fixed random true model."""
    rng = np.random.default_rng(seed)
    size = 1 << spec.bits
    truth = np.random.default_rng(12345).normal(0, 0.5, size).astype(np.float32)
    done = 0
    while done < n_records:
        n = min(per_frame, n_records - done)
        idx = rng.integers(0, size, n * features, dtype=np.uint32)
        vals = rng.choice(np.array([-1.0, 1.0], np.float32), n * features) if signed else None
        contrib = truth[idx] * (vals if vals is not None else 1.0)
        margin = contrib.reshape(n, features).sum(axis=1)
        labels = (rng.random(n) < 1.0 / (1.0 + np.exp(-margin))).astype(np.uint8)
        offsets = np.arange(0, n * features + 1, features, dtype=np.uint32)
        yield encode_train(spec, labels, offsets, idx, values=vals)
        done += n


def produce_synthetic(settings: KafkaSettings, topic: str, spec: SpecId, n_records: int,
                      per_frame: int = 5000, features: int = 20, seed: int = 0,
                      partitions: int | None = None) -> int:
    """Produce frames round-robin over ``partitions`` (or by the default partitioner); returns frames."""
    producer = make_producer(settings, **{"linger.ms": 20})
    count = 0
    for i, frame in enumerate(synthetic_frames(spec, n_records, per_frame, features, seed)):
        kw = {"partition": i % partitions} if partitions else {}
        while True:
            try:
                producer.produce(topic, value=frame, **kw)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
        count += 1
    if producer.flush(60):
        raise RuntimeError("produce did not complete")
    return count


def wait_for(cond: Callable[[], T], timeout: float, what: str, every: float = 0.05) -> T:
    """Poll ``cond`` until it returns a truthy value, or raise TimeoutError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def snapshot_records(directory: Path) -> int:
    """Records in the newest snapshot; -1 when there is none (or it was pruned while reading)."""
    files = snapshot_files(directory)
    if not files:
        return -1
    try:
        return read_records(files[-1][1])
    except (OSError, ValueError, KeyError):
        return -1


def worker_pids(supervisor_pid: int) -> list[int]:
    """The supervisor's worker processes (Linux /proc), excluding multiprocessing helpers."""
    try:
        raw = Path(f"/proc/{supervisor_pid}/task/{supervisor_pid}/children").read_text()
    except OSError:
        return []
    out = []
    for pid in map(int, raw.split()):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmd and b"resource_tracker" not in cmd:
            out.append(pid)
    return out
