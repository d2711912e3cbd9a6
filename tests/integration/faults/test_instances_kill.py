"""Scale-out under faults: an instance SIGKILLed mid-way and restarted, a fourth joining mid-way;
every record still ends in the merged model exactly once (docs/scale-out.md)."""
from __future__ import annotations

import os
import signal

from tests.integration.test_trainer_instances import (PARTITIONS, SPEC, Instances, check_exactly_once,
                                                      make_env)
from trainer.launch import produce_synthetic, wait_for


def test_kill_restart_and_join_mid_way_learn_every_record_once(kafka_bootstrap, tmp_path):
    ks = make_env(kafka_bootstrap)
    inst = Instances(ks, tmp_path)
    phase = 200_000

    def produce(seed: int) -> None:
        produce_synthetic(ks, ks.topics.train, SPEC, phase, per_frame=1000, partitions=PARTITIONS, seed=seed)

    try:
        for i in range(3):
            inst.start(i)
        wait_for(lambda: all(inst.global_records(i) == 0 for i in range(3)), 90, "instances up")
        produce(1)
        wait_for(lambda: inst.global_records(0) > 0, 120, "learning under way")
        os.killpg(inst.procs[1].pid, signal.SIGKILL)  # mid-way: its unpublished learning is lost
        inst.procs[1].wait(30)
        inst.start(3)  # a fourth joins mid-way and starts from the log
        produce(2)
        wait_for(lambda: inst.global_records(0) >= phase, 180, "phase 1 merged")
        inst.start(1)  # restarts from its own snapshot and catches up on the deltas after it
        produce(3)
        inst.wait_all(3 * phase, 300)
        inst.stop()
        check_exactly_once(ks, inst, 3 * phase)
    finally:
        inst.kill_all()
    logs = inst.log(1)
    assert "resuming from snapshot" in logs or "deltas: instance inst1" in logs
