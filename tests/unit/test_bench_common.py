"""benchmarks.common's CPU split, which the trainer benchmark reports beside its rates."""
from __future__ import annotations

import os
import time

from benchmarks.common import CpuSplit


def test_cpu_split_counts_the_given_processes_and_not_others():
    """The trainer benchmark's CPU split: a busy process is counted against its own pid, and a
    pid list that misses it counts nothing."""
    mine, other = CpuSplit(), CpuSplit()
    mine.start([os.getpid()])
    other.start([])
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
    got, none = mine.stop([os.getpid()]), other.stop([])
    assert got["processes_cores"] > 0.0
    assert none["processes_cores"] == 0.0
    assert 0.0 <= got["host_idle_share"] <= 1.0 and got["broker_jvm_cores"] >= 0.0
