"""The trainer's one frozen settings object, from flags with environment fallbacks."""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from shared.clients import consumer_config
from shared.errors import ConfigError
from shared.hashspec import Algorithm, SpecId
from shared.settings import KafkaSettings
from trainer.model import Hyper, Optimizer


@dataclass(frozen=True, slots=True)
class TrainerSettings:
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    hyper: Hyper = field(default_factory=Hyper)
    bits: int = 22
    spec: SpecId | None = None  # None: adopt from the first valid frame (bits must match)
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    group: str = "hb-trainer"
    checkpoint_dir: Path = Path("checkpoints")
    checkpoint_records: int = 5_000_000
    checkpoint_seconds: float = 60.0
    # a pause in the stream this long after records were learned triggers a snapshot (and a model
    # for the scorers) at once instead of up to checkpoint_seconds later; 0 turns it off
    checkpoint_idle_seconds: float = 1.0
    # a snapshot as soon as every partition read has ended on a producer's end-of-input marker
    checkpoint_at_end: bool = True
    keep_snapshots: int = 3
    publish: bool = True
    until_caught_up: bool = False
    batch_messages: int = 64  # frames per consume() call
    # an idle worker waits this long in consume() per call; a checkpoint waits for every worker to
    # reach a batch boundary, so this bounds the pause of an idle-triggered snapshot (0.2 s made
    # the idle checkpoint take ~0.25 s, nearly all of it waiting; 50 wake-ups a second cost nothing)
    poll_timeout: float = 0.02
    report_seconds: float = 10.0
    curve_records: int = 0  # >0: each worker posts a learning-curve point every N of its records
    metrics_port: int = 0  # 0: no HTTP server
    max_partitions: int = 256
    session_timeout_ms: int = 10000  # how long a SIGKILLed member holds its partitions
    # worker deaths in a row with no snapshot written between them before the trainer gives up;
    # the restarts after the first back off 1, 2, 4, ... s (supervisor._recover)
    max_restarts: int = 5
    sync_deltas: bool = False  # scale-out: exchange sparse deltas with other instances
    sync_seconds: float = 2.0
    sync_records: int = 1_000_000
    instance_id: str = ""  # empty: the snapshot's, else hostname-pid

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError("--workers must be >= 1")
        if self.spec is not None and self.spec.bits != self.bits:
            raise ConfigError("spec bits differ from --bits")
        if self.checkpoint_records < 1 or self.checkpoint_seconds <= 0:
            raise ConfigError("checkpoint interval must be positive")
        if self.checkpoint_idle_seconds < 0:
            raise ConfigError("--checkpoint-idle-seconds must be >= 0 (0: off)")
        if self.curve_records < 0:
            raise ConfigError("--curve-records must be >= 0")
        if self.max_restarts < 0:
            raise ConfigError("--max-restarts must be >= 0")
        if self.sync_seconds <= 0 or self.sync_records < 1:
            raise ConfigError("sync interval must be positive")

    def consumer_config(self) -> dict[str, Any]:
        """Committed offsets are for lag monitoring only: auto-commit what the worker stored."""
        return consumer_config(self.kafka, self.group, **{
            "enable.auto.commit": True, "auto.commit.interval.ms": 2000,
            "partition.assignment.strategy": "range",
            "session.timeout.ms": self.session_timeout_ms,
            "heartbeat.interval.ms": max(500, self.session_timeout_ms // 6),
        })

    @classmethod
    def from_args(cls, argv: list[str], env: Mapping[str, str] | None = None) -> "TrainerSettings":
        env = os.environ if env is None else env
        a = parser().parse_args(argv)
        try:
            hyper = Hyper(Optimizer(a.optimizer), a.lr, a.l2, a.l1, a.beta, a.decay)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        spec = None
        if a.key_id:
            try:
                kid = bytes.fromhex(a.key_id)
                spec = SpecId(Algorithm[a.algorithm.upper()], a.bits, a.signed, kid)
            except (ValueError, KeyError) as exc:
                raise ConfigError(f"bad spec flags: {exc}") from exc
        return cls(
            kafka=KafkaSettings.from_env(a.bootstrap, a.topic_prefix, env),
            hyper=hyper, bits=a.bits, spec=spec, workers=a.workers,
            group=a.group or env.get("HASHBRIDGE_TRAINER_GROUP", "hb-trainer"),
            checkpoint_dir=Path(a.checkpoint_dir or env.get("HASHBRIDGE_CHECKPOINT_DIR", "checkpoints")),
            checkpoint_records=a.checkpoint_records, checkpoint_seconds=a.checkpoint_seconds,
            checkpoint_idle_seconds=a.checkpoint_idle_seconds, checkpoint_at_end=not a.no_checkpoint_at_end,
            keep_snapshots=a.keep, publish=not a.no_publish, until_caught_up=a.until_caught_up,
            batch_messages=a.batch_messages, report_seconds=a.report_seconds,
            curve_records=a.curve_records,
            metrics_port=a.metrics_port if a.metrics_port is not None
            else int(env.get("HASHBRIDGE_TRAINER_METRICS_PORT", "0")),
            session_timeout_ms=a.session_timeout_ms, max_restarts=a.max_restarts,
            sync_deltas=a.sync_deltas, sync_seconds=a.sync_seconds, sync_records=a.sync_records,
            instance_id=a.instance_id or env.get("HASHBRIDGE_INSTANCE_ID", ""),
        )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hashbridge train", description=(
        "Supervisor plus Hogwild workers learning logistic regression from the train topic."))
    p.add_argument("--bootstrap", help="Kafka bootstrap servers (env HASHBRIDGE_BOOTSTRAP)")
    p.add_argument("--topic-prefix", help="topic name prefix (env HASHBRIDGE_TOPIC_PREFIX, default hb.)")
    p.add_argument("--group", help="consumer group (env HASHBRIDGE_TRAINER_GROUP, default hb-trainer)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker processes (default: cores)")
    p.add_argument("--bits", type=int, default=22, help="log2 of the weight count (default 22)")
    p.add_argument("--key-id", help="expected key id (hex); omitted: adopt from the first valid frame")
    p.add_argument("--algorithm", default="blake2b_keyed", choices=[a.name.lower() for a in Algorithm])
    p.add_argument("--signed", action="store_true", help="frames use signed hashing")
    p.add_argument("--optimizer", default="adagrad", choices=[o.value for o in Optimizer])
    p.add_argument("--lr", type=float, default=0.1, help="learning rate (alpha for FTRL)")
    p.add_argument("--l2", type=float, default=0.0)
    p.add_argument("--l1", type=float, default=0.0, help="FTRL only")
    p.add_argument("--beta", type=float, default=1.0, help="FTRL only")
    p.add_argument("--decay", type=float, default=1e-6, help="SGD only: lr/(1+decay*t)")
    p.add_argument("--checkpoint-dir", help="snapshot directory (env HASHBRIDGE_CHECKPOINT_DIR)")
    p.add_argument("--checkpoint-records", type=int, default=5_000_000)
    p.add_argument("--checkpoint-seconds", type=float, default=60.0)
    p.add_argument("--checkpoint-idle-seconds", type=float, default=1.0,
                   help="snapshot (and publish) once the stream has paused this long after learning "
                        "records since the last snapshot (default 1; 0: off)")
    p.add_argument("--no-checkpoint-at-end", action="store_true",
                   help="do not snapshot when every partition read ends on a producer's end-of-input "
                        "marker (the idle and interval rules still apply)")
    p.add_argument("--keep", type=int, default=3, help="snapshots kept on disk")
    p.add_argument("--no-publish", action="store_true", help="do not publish models to the models topic")
    p.add_argument("--until-caught-up", action="store_true",
                   help="stop (final checkpoint) once every partition reached its end offset at start")
    p.add_argument("--batch-messages", type=int, default=64, help="frames per consume call")
    p.add_argument("--report-seconds", type=float, default=10.0)
    p.add_argument("--curve-records", type=int, default=0,
                   help="learning curve: each worker records a point every N of its records (checked "
                        "per frame); appended to progress.jsonl at each report (default 0: off)")
    p.add_argument("--metrics-port", type=int, help="Prometheus port (env HASHBRIDGE_TRAINER_METRICS_PORT)")
    p.add_argument("--session-timeout-ms", type=int, default=10000,
                   help="consumer session timeout: how soon a killed worker's partitions move")
    p.add_argument("--max-restarts", type=int, default=5,
                   help="give up (exit 1) after this many worker deaths in a row with no snapshot "
                        "written between them; restarts after the first wait 1, 2, 4, ... s (default 5)")
    p.add_argument("--sync-deltas", action="store_true",
                   help="scale out: merge with the other instances of --group through the deltas topic")
    p.add_argument("--sync-seconds", type=float, default=2.0, help="publish a delta every T seconds")
    p.add_argument("--sync-records", type=int, default=1_000_000,
                   help="... or every K records; the workers learn at most 2 K records beyond what "
                        "the log has accepted from this instance (bounded staleness)")
    p.add_argument("--instance-id", help="instance id in the deltas (env HASHBRIDGE_INSTANCE_ID; "
                   "default: the one in the snapshot, else hostname-pid)")
    return p
