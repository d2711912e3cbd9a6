"""The scorer's one frozen settings object; it alone builds the librdkafka overrides."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Mapping

from shared.settings import KafkaSettings

Mode = Literal["latency", "throughput"]

# Per mode: (most messages per batch, longest wait for a first message s, reply producer linger ms,
# commit interval s). The loop never waits for a batch to fill: it takes what the fetch queue
# holds and waits only while that is empty (``ScorerService._next_batch``); that wait returns at
# the first message, so its length only bounds how late the periodic chores run.
MODE_DEFAULTS: dict[str, tuple[int, float, float, float]] = {
    "latency": (64, 0.1, 0.0, 0.5),
    "throughput": (16, 0.05, 5.0, 2.0),  # frames are large (16k-64k records, up to MiBs each)
}

# librdkafka settings per mode. Latency: fetch responses as soon as one byte is there (the broker
# answers a waiting fetch at the append that satisfies fetch.min.bytes, so fetch.wait.max.ms only
# bounds an idle fetch; at 2 ms an idle scorer cost the broker ~30% of a core in empty fetches,
# CPU that the request path lacked on a busy machine), replies sent at once, uncompressed (a
# one-record reply is ~60 bytes), Nagle's algorithm off (small requests would otherwise wait for
# the peer's delayed ACK). Throughput: fetches of several MiB, a deep prefetch queue so the
# broker's next frames arrive while the kernel runs, replies batched, uncompressed (probabilities
# and random request ids do not compress; lz4 cost CPU for nothing, measured in docs/scorer.md).
_CONSUMER_MODE: dict[str, dict[str, Any]] = {
    "latency": {"fetch.wait.max.ms": 100, "fetch.min.bytes": 1, "fetch.queue.backoff.ms": 1,
                "socket.nagle.disable": True},
    "throughput": {"fetch.wait.max.ms": 50, "fetch.min.bytes": 1 << 20,
                   "queued.max.messages.kbytes": 256 * 1024, "queued.min.messages": 1000},
}
# Threads that score large frames (``scoring.serve_many``): a bulk frame's kernel releases the GIL,
# so a second thread scores one frame while the loop's thread decodes, copies and produces the
# others. On 2 cores shared with librdkafka and the broker the gain was small and not consistent
# (+22, +8, +11, +7, -1 % in five interleaved comparisons; docs/scorer.md). Single-record requests are
# scored together in one kernel call: one thread.
SERVE_THREADS: dict[str, int] = {"latency": 1, "throughput": 2}
# Freed memory the process keeps for reuse (``scorer.heap``), per mode: bulk frames are MiBs each and
# re-faulting their buffers cost ~30% of the serving thread; single-record requests never notice.
HEAP_KEEP_BYTES: dict[str, int] = {"latency": 0, "throughput": 256 * 1024 * 1024}

_PRODUCER_MODE: dict[str, dict[str, Any]] = {
    "latency": {"batch.num.messages": 64, "compression.type": "none", "socket.nagle.disable": True},
    "throughput": {"batch.num.messages": 10000, "batch.size": 16 * 1024 * 1024,
                   "compression.type": "none"},
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
    serve_threads: int = 0  # 0: the mode's default (SERVE_THREADS)

    def __post_init__(self) -> None:
        if self.mode not in MODE_DEFAULTS:
            raise ValueError(f"mode must be one of {sorted(MODE_DEFAULTS)}, got {self.mode!r}")
        b, w, lg, c = MODE_DEFAULTS[self.mode]
        # resolve the mode's defaults once, so the loop never looks them up
        object.__setattr__(self, "batch_size", self.batch_size or b)
        object.__setattr__(self, "consume_wait", w if self.consume_wait < 0 else self.consume_wait)
        object.__setattr__(self, "linger_ms", lg if self.linger_ms < 0 else self.linger_ms)
        object.__setattr__(self, "commit_interval", c if self.commit_interval < 0 else self.commit_interval)
        if self.serve_threads < 0:
            raise ValueError(f"serve_threads must be >= 0, got {self.serve_threads}")
        object.__setattr__(self, "serve_threads", self.serve_threads or SERVE_THREADS[self.mode])

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **flags: Any) -> "ScorerSettings":
        """Flags (None = unset) win over HASHBRIDGE_SCORER_* variables, which win over defaults."""
        env = os.environ if env is None else env
        kafka = KafkaSettings.from_env(flags.pop("bootstrap", None), flags.pop("prefix", None), env)
        values: dict[str, Any] = {}
        for name, conv in (("group", str), ("mode", str), ("model_wait", float), ("partitions", int),
                           ("metrics_port", int), ("session_timeout_ms", int), ("serve_threads", int)):
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
                "partition.assignment.strategy": "roundrobin", **_CONSUMER_MODE[self.mode]}

    def producer_overrides(self) -> dict[str, Any]:
        return {"linger.ms": self.linger_ms, **_PRODUCER_MODE[self.mode]}
