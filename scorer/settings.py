"""The scorer's one frozen settings object; it alone builds the librdkafka overrides."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Mapping

from shared.settings import KafkaSettings

Mode = Literal["latency", "throughput"]

# Per mode: (messages per consume call, consume wait s, reply producer linger ms, commit interval s)
MODE_DEFAULTS: dict[str, tuple[int, float, float, float]] = {
    "latency": (64, 0.002, 0.0, 0.5),
    "throughput": (100, 0.05, 20.0, 2.0),
}


@dataclass(frozen=True, slots=True)
class ScorerSettings:
    """Everything the scorer reads; built once from flags and the environment."""

    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    group: str = "hb-scorer"
    mode: Mode = "latency"
    model_wait: float = 30.0  # grace after start-up to wait for a first model, then error replies
    partitions: int = 4  # used only when the pipeline topics do not exist yet
    metrics_port: int | None = None
    session_timeout_ms: int = 10000
    model_check_interval: float = 0.2  # how often the loop looks for a newer model
    lag_interval: float = 5.0  # how often consumer lag is measured
    batch_size: int = 0  # 0: the mode's default
    consume_wait: float = -1.0  # < 0: the mode's default
    linger_ms: float = -1.0
    commit_interval: float = -1.0

    def __post_init__(self) -> None:
        if self.mode not in MODE_DEFAULTS:
            raise ValueError(f"mode must be one of {sorted(MODE_DEFAULTS)}, got {self.mode!r}")
        b, w, lg, c = MODE_DEFAULTS[self.mode]
        # resolve the mode's defaults once, so the loop never looks them up
        object.__setattr__(self, "batch_size", self.batch_size or b)
        object.__setattr__(self, "consume_wait", w if self.consume_wait < 0 else self.consume_wait)
        object.__setattr__(self, "linger_ms", lg if self.linger_ms < 0 else self.linger_ms)
        object.__setattr__(self, "commit_interval", c if self.commit_interval < 0 else self.commit_interval)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **flags: Any) -> "ScorerSettings":
        """Flags (None = unset) win over HASHBRIDGE_SCORER_* variables, which win over defaults."""
        env = os.environ if env is None else env
        kafka = KafkaSettings.from_env(flags.pop("bootstrap", None), flags.pop("prefix", None), env)
        values: dict[str, Any] = {}
        for name, conv in (("group", str), ("mode", str), ("model_wait", float), ("partitions", int),
                           ("metrics_port", int), ("session_timeout_ms", int)):
            raw = env.get("HASHBRIDGE_SCORER_" + name.upper())
            if raw not in (None, ""):
                values[name] = conv(raw)
        values.update({k: v for k, v in flags.items() if v is not None})
        return cls(kafka=kafka, **values)

    def with_(self, **changes: Any) -> "ScorerSettings":
        return replace(self, **changes)

    def consumer_overrides(self) -> dict[str, Any]:
        return {"session.timeout.ms": self.session_timeout_ms,
                "heartbeat.interval.ms": max(100, self.session_timeout_ms // 10),
                "fetch.wait.max.ms": 5 if self.mode == "latency" else 100,
                "partition.assignment.strategy": "roundrobin"}

    def producer_overrides(self) -> dict[str, Any]:
        return {"linger.ms": self.linger_ms, "batch.num.messages": 1000 if self.mode == "latency" else 10000}
