"""Worker deaths with nothing saved between them back off and then stop the trainer, instead of
restarting forever; a snapshot written between two deaths starts the count again."""
from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from shared.errors import CrashLoop, ConfigError
from shared.settings import KafkaSettings
from trainer import shm as S
from trainer import supervisor as sup_mod
from trainer.metrics import TrainerMetrics
from trainer.settings import TrainerSettings
from trainer.supervisor import Supervisor


class Dying(Supervisor):
    """Workers that exit with code 3 as soon as they start (real processes, spawned)."""

    def _start_worker(self, index: int) -> Any:
        p = mp.get_context("spawn").Process(target=os._exit, args=(3,), name=f"dying-{index}")
        p.start()
        return p


def _supervisor(tmp_path: Path, max_restarts: int) -> Dying:
    s = TrainerSettings(kafka=KafkaSettings(bootstrap="127.0.0.1:1"), bits=10, workers=1,
                        checkpoint_dir=tmp_path, publish=False, max_restarts=max_restarts)
    return Dying(s, TrainerMetrics(CollectorRegistry()))


def _deaths_gauge(sup: Dying) -> float | None:
    return sup.metrics.registry.get_sample_value("hb_trainer_worker_deaths_since_snapshot")


@contextmanager
def _running(sup: Dying) -> Iterator[S.SharedArrays]:
    """The supervisor's shared block, restored empty, with its first (dying) worker started."""
    with S.SharedState(bits=10, workers=1) as a:
        sup.arrays = a
        sup._restore(None)
        sup.procs = [sup._start_worker(0)]
        yield a


def _death(sup: Dying) -> float:
    """Wait for the worker to die, let the supervisor notice; returns how long it took to react."""
    sup.procs[0].join(30)
    t = time.monotonic()
    sup._check_workers()
    return time.monotonic() - t


def test_deaths_in_a_row_back_off_then_stop_the_trainer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sup_mod, "_BACKOFF_BASE", 0.2)
    sup = _supervisor(tmp_path, max_restarts=3)
    with _running(sup):
        waits = [_death(sup) for _ in range(3)]  # restarts 1-3: at once, then 0.2 s, 0.4 s
        with pytest.raises(CrashLoop, match=r"4 times in a row.*--max-restarts 3"):
            _death(sup)
    assert sup.restarts == 3 and _deaths_gauge(sup) == 4
    assert waits[0] < 0.2 <= waits[1] < 0.4 <= waits[2]


def test_a_snapshot_between_deaths_resets_the_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sup_mod, "_BACKOFF_BASE", 0.2)
    sup = _supervisor(tmp_path, max_restarts=1)
    with _running(sup) as a:
        for _ in range(3):  # each death would be the second in a row without the snapshot
            assert _death(sup) < 0.2  # the first death since a snapshot restarts at once
            a.stats[0, 0] += 5  # records learned, then saved
            assert sup.checkpoint(live=False) is not None and sup._deaths == 0
            assert _deaths_gauge(sup) == 0
        with pytest.raises(CrashLoop):
            _death(sup)
            _death(sup)
    assert sup.last is not None and sup.last.records == 15


def test_stop_during_the_back_off_starts_no_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sup_mod, "_BACKOFF_BASE", 30.0)
    sup = _supervisor(tmp_path, max_restarts=5)
    with _running(sup):
        _death(sup)
        sup._stop = True  # what SIGTERM's handler does
        assert _death(sup) < 5  # not the 30 s back-off
        assert sup.procs == []


def test_max_restarts_must_not_be_negative() -> None:
    with pytest.raises(ConfigError, match="--max-restarts"):
        TrainerSettings(max_restarts=-1)
    assert TrainerSettings.from_args(["--max-restarts", "0"], env={}).max_restarts == 0
