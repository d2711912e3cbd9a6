"""The pipeline benchmark starts its clock only once the trainer's consumer group is stable."""
from __future__ import annotations

from pathlib import Path

from benchmarks.pipeline import PARTITIONS, _group_ready, _holding

FIRST = "2026-11-29 23:27:12,799 INFO trainer-worker-0 trainer.service: worker 0 assigned partitions [0, 1, 2, 3]\n"
REBALANCED = (
    "2026-11-29 23:27:14,663 INFO trainer-worker-0 trainer.service: worker 0 revoked partitions [0, 1, 2, 3]\n"
    "2026-11-29 23:27:14,673 INFO trainer-worker-1 trainer.service: worker 1 assigned partitions [0, 1]\n"
    "2026-11-29 23:27:14,673 INFO trainer-worker-0 trainer.service: worker 0 assigned partitions [2, 3]\n"
)


def test_one_worker_holding_everything_is_not_a_two_worker_group(tmp_path: Path) -> None:
    log = tmp_path / "trainer.log"
    log.write_text(FIRST)
    assert _holding(log) == {0: set(range(PARTITIONS))}
    assert not _group_ready(log, 2)
    assert _group_ready(log, 1)


def test_after_the_rebalance_both_workers_hold_partitions(tmp_path: Path) -> None:
    log = tmp_path / "trainer.log"
    log.write_text(FIRST + REBALANCED)
    assert _holding(log) == {0: {2, 3}, 1: {0, 1}}
    assert _group_ready(log, 2)


def test_a_revocation_not_yet_followed_by_assignments_is_not_ready(tmp_path: Path) -> None:
    log = tmp_path / "trainer.log"
    log.write_text(FIRST + REBALANCED.splitlines(keepends=True)[0])
    assert _holding(log) == {0: set()}
    assert not _group_ready(log, 1) and not _group_ready(log, 2)


def test_a_missing_log_is_not_ready(tmp_path: Path) -> None:
    assert _holding(tmp_path / "absent.log") == {}
    assert not _group_ready(tmp_path / "absent.log", 2)
