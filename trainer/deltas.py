"""Scale-out: trainer instances on several machines merge into one model through ``hb.deltas``.

Why this works (docs/scale-out.md has the whole argument):

* Every instance's supervisor keeps ``copy``, the *accepted cut*: the sum of every accepted
  delta it has read from the single-partition ``hb.deltas`` log. Its own learning since then is
  ``state - copy`` on the touched coordinates; it publishes that (weights and accumulators,
  float16 with error feedback, ``trainer/deltacodec.py``) with its *claims*: for every
  ``hb.train`` partition it learned, the offset range ``[start, end)`` covered.
* A delta is *accepted* iff each claim starts where the accepted claims of that partition ended
  (:class:`Ledger`). Every instance reads the same log in the same order, so all agree on what
  is accepted; accepted claims tile each partition without gap or overlap: every record is in
  the merged model exactly once. A rejected delta (its partition moved in a rebalance and
  another instance learned it first) is discarded by everyone; its publisher rolls back to its
  accepted cut and relearns from the accepted ends.
* Snapshots hold the accepted cut, its ``hb.deltas`` position and the accepted ends; a restart
  restores the cut and replays the log after it (its own later deltas included), so it neither
  loses nor double-applies a delta or a record. A new instance starts the same way from the
  cut the model publisher put on ``hb.models`` (``trainer/base.py``). One own delta is in
  flight at a time.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from confluent_kafka import Consumer, TopicPartition

from shared.clients import MAX_MESSAGE_BYTES, make_producer
from shared.errors import KafkaError
from trainer import shm as S
from trainer.deltacodec import Delta, DeltaError, add_rows, decode_delta, diff_delta, encode_delta, quantise
from trainer.progressive import merge

__all__ = ["Delta", "DeltaError", "DeltaSync", "Ledger", "accept", "decode_delta", "diff_delta",
           "encode_delta", "quantise"]
log = logging.getLogger(__name__)
CHUNK_BYTES = 8 * 1024 * 1024  # a large delta goes in parts; accepted when its last part is read
SAMPLE = 512  # coordinates whose weights ride along to measure divergence between instances
TOPIC_CONFIG = {"max.message.bytes": str(MAX_MESSAGE_BYTES), "retention.ms": "-1"}


def default_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class Ledger:
    """The accepted claims: the same log read in the same order gives every instance the same
    answer, which is what makes "each record learned exactly once" hold across instances."""

    ends: dict[int, int] = field(default_factory=dict)
    records: int = 0
    accepted: int = 0
    rejected: int = 0

    def fits(self, claims: dict[int, tuple[int, int]]) -> bool:
        return all((p not in self.ends or s == self.ends[p]) and e > s
                   for p, (s, e) in claims.items())

    def decide(self, d: Delta) -> bool:
        if not self.fits(d.claims):
            self.rejected += 1
            return False
        for p, (_, e) in d.claims.items():
            self.ends[p] = e
        self.records += d.records
        self.accepted += 1
        return True

    def as_dict(self) -> dict[str, Any]:
        return {"ends": {str(p): e for p, e in self.ends.items()}, "records": self.records,
                "accepted": self.accepted, "rejected": self.rejected}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Ledger":
        return cls({int(p): int(e) for p, e in d["ends"].items()}, int(d["records"]),
                   int(d["accepted"]), int(d["rejected"]))


def accept(d: Delta, ledger: Ledger, state: np.ndarray, bias: np.ndarray) -> bool:
    """Decide ``d`` and, if accepted, add it to the cut ``(state, bias)``: the whole arithmetic of
    reading the log, the same for a replay from offset 0 and for one from a published base."""
    if not ledger.decide(d):
        return False
    _add(d, state, bias)
    return True


def messages_seen(counters: np.ndarray) -> int:
    """Train messages the workers consumed (learned + rejected): each advanced an offset by one."""
    return int(counters[:, S.W_FRAMES].sum() + counters[:, S.W_REJECT:S.W_LEN].sum())


class DeltaSync:
    """One instance's half of the protocol, driven by the supervisor's loop (workers untouched).

    ``restore`` before the workers start; ``poll`` every tick (reads and decides the log; False
    when our own delta was rejected); ``absorb`` while the workers are paused (adds accepted
    remote deltas to shared memory; False on a conflict); ``step`` likewise, and captures ours;
    ``catch_up`` at a rebalance (workers' claim handover); ``publish`` after they resumed;
    ``rollback`` while they are stopped; ``cut`` says what a snapshot holds. ``copy`` always is
    the accepted cut at ``position``; ``queue`` holds accepted deltas not yet in shared memory.
    """

    def __init__(self, settings: Any, arrays: S.SharedArrays, metrics: Any, instance: str) -> None:
        self.s, self.a, self.m, self.instance = settings, arrays, metrics, instance
        self.topic = settings.kafka.topics.deltas
        self.copy = np.zeros_like(arrays.state)
        self.copy_bias = np.zeros(2)
        self.stats_copy = np.zeros(arrays.stats.shape[1])
        self.ledger = Ledger()
        self.position = 0  # next hb.deltas offset to read
        self.origin = {"model_version": 0, "deltas_next": 0}  # where this instance first started
        self.seq = 0
        self.queue: list[Delta] = []
        self.pending: tuple[Delta, np.ndarray, bytes] | None = None  # ours in flight: stats, wire
        self._unsent = False
        self.parts: dict[tuple[str, int], tuple[int, list[bytes]]] = {}
        self.peers: dict[str, float] = {}
        self.base = np.full_like(arrays.offsets, -1)
        self.msgs_base = 0
        self.last_sync = time.monotonic()
        self.last_sent = 0.0
        size = arrays.state.shape[0]
        self.sample = np.sort(np.random.default_rng(7).choice(size, min(SAMPLE, size), replace=False))
        self.producer = make_producer(settings.kafka, **{"compression.type": "none", "linger.ms": 0})
        self.consumer = Consumer({**settings.kafka.base_config(), "group.id": f"{settings.group}.deltas",
                                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                                  "fetch.max.bytes": 4 * MAX_MESSAGE_BYTES,
                                  "max.partition.fetch.bytes": MAX_MESSAGE_BYTES})

    # --- start, rollback, snapshot ---
    def restore(self, ckpt: Any) -> None:
        """From a snapshot's (or a published base's) accepted cut, or nothing, replay the log
        from the cut's position to its end into shm."""
        sync = getattr(ckpt, "sync", None) if ckpt is not None else None
        if ckpt is not None:
            self.copy[:] = ckpt.state
            self.copy_bias[:] = ckpt.bias
            self.stats_copy[:] = ckpt.stats
        if sync:
            self.ledger = Ledger.from_dict(sync["ledger"])
            self.position, self.seq = int(sync["deltas_next"]), int(sync["seq"])
            self.origin = dict(sync.get("origin") or self.origin)
        elif ckpt is not None:  # a single-instance snapshot: its offsets become the accepted ends
            self.ledger.ends = dict(ckpt.offsets)
        log.info("deltas: instance %s reads %s from offset %d (started from model version %d at "
                 "offset %d)", self.instance, self.topic, self.position, self.origin["model_version"],
                 self.origin["deltas_next"])
        self.consumer.assign([TopicPartition(self.topic, 0, self.position)])
        self.catch_up()
        self._load_shm()
        log.info("deltas: instance %s at %s offset %d: %d accepted (%d records), %d rejected",
                 self.instance, self.topic, self.position, self.ledger.accepted,
                 self.ledger.records, self.ledger.rejected)

    def rollback(self) -> None:
        """Workers stopped: resolve our delta in flight, then shared memory := the accepted cut."""
        if self._unsent:  # captured but never sent: nobody will read it
            self.pending, self._unsent = None, False
        self.producer.flush(30)
        self.catch_up()
        self.m.delta_rollbacks.inc()
        self._load_shm()

    def _load_shm(self) -> None:
        a = self.a
        self.queue = []
        a.state[:] = self.copy
        a.bias[:] = self.copy_bias
        a.stats[:] = 0.0
        a.stats[0] = self.stats_copy
        a.offsets[:] = -1
        for p, e in self.ledger.ends.items():
            a.offsets[p] = e
        self.base = a.offsets.copy()
        self.msgs_base = messages_seen(a.counters)

    def catch_up(self, timeout: float = 120.0) -> bool:
        """Read and decide the log up to its current end; our delta in flight gets resolved.
        False when it was rejected."""
        _, high = self.consumer.get_watermark_offsets(TopicPartition(self.topic, 0), timeout=30)
        deadline = time.monotonic() + timeout
        ok = True
        while self.position < high or self.parts:
            if time.monotonic() > deadline:
                raise KafkaError(f"deltas: could not read {self.topic} up to offset {high}")
            ok = self.poll(0.5) and ok
        if self.pending is not None and not self._unsent:
            raise KafkaError("deltas: our own delta is not in the log")
        return ok

    def cut(self) -> dict[str, Any] | None:
        """Snapshot fields beside ``copy``; None while a delta is half read (retry later)."""
        if self.parts:
            return None
        return {"instance": self.instance, "deltas_next": self.position, "seq": self.seq,
                "ledger": self.ledger.as_dict(), "origin": self.origin}

    # --- reading the log ---
    def poll(self, timeout: float = 0.0) -> bool:
        """Read what is there; False when our own delta in flight was rejected."""
        ok = True
        for msg in self.consumer.consume(64, timeout):
            if msg.error() is not None:
                continue
            self.position = msg.offset() + 1
            h = {k: v.decode() for k, v in (msg.headers() or [])}
            key = (h.get("hb.instance", ""), int(h.get("hb.seq", "0")))
            part, nparts = (int(x) for x in h.get("hb.part", "0/1").split("/"))
            first, chunks = self.parts.get(key, (msg.offset(), []))
            chunks.append(msg.value() or b"")
            if part + 1 < nparts:
                self.parts[key] = (first, chunks)
                continue
            self.parts.pop(key, None)
            if self.pending is not None and key == (self.instance, self.pending[0].seq):
                ok = self._decide(self.pending[0]) and ok  # ours read back: no need to decode it
                continue
            try:
                d = decode_delta(b"".join(chunks), self.a.state.shape[0])
            except DeltaError as exc:
                log.warning("deltas: undecodable delta at offset %d: %s", msg.offset(), exc)
                continue
            ok = self._decide(d) and ok
        return ok

    def _decide(self, d: Delta) -> bool:
        accepted = accept(d, self.ledger, self.copy, self.copy_bias)
        self.peers[d.instance] = time.time()
        if not accepted:
            self.m.deltas_rejected.inc()
            log.info("deltas: rejected %s#%d: claims %s do not continue the accepted ones",
                     d.instance, d.seq, d.claims)
        if self.pending is not None and (d.instance, d.seq) == (self.instance, self.pending[0].seq):
            if accepted:  # already in shared memory: only the cut moves
                self.stats_copy[:] = self.pending[1]
            self.pending = None
            return accepted
        if accepted:
            self.queue.append(d)
        return True

    # --- one sync, workers paused between two messages ---
    def due(self, seconds: float, records: int) -> bool:
        return self.pending is None and (time.monotonic() - self.last_sync >= seconds or
                                         self.a.records() - int(self.stats_copy[0]) >= records)

    def absorb(self) -> bool:
        """Workers paused: add the accepted remote deltas read so far to shm, their partitions'
        ends to the shared offsets and to our base (we did not learn those records); False when
        one claims a partition we learned since our last sync (a conflict: roll back).

        Called as soon as a remote delta is read, not only at our own sync: staleness (learning
        from a model that lacks the peers' recent records) is what costs accuracy."""
        a = self.a
        mine = {int(p) for p in np.flatnonzero(a.offsets != self.base)}
        now = time.time()
        for d in self.queue:
            if mine & d.claims.keys():
                log.info("deltas: %s#%d claims partitions we learned since our last sync", d.instance, d.seq)
                return False
            _add(d, a.state, a.bias)
            for p, (_, e) in d.claims.items():
                a.offsets[p] = self.base[p] = e
            self.m.delta_applied(now - d.created_at, self._divergence(d))
        self.queue = []
        return True

    def step(self, exact: bool = False) -> bool:
        """Absorb accepted remote deltas, capture ours; False: a conflict, roll back.

        Ours is float16 while it has records, else (idle, or ``exact``: the final one) float32:
        what rounding or the hold threshold leaves out stays in ``state - copy`` and goes with
        the next delta, so once every instance is idle all accepted cuts are the same model."""
        if not self.absorb():
            return False
        a = self.a
        offsets = a.offsets.copy()
        msgs = messages_seen(a.counters)
        mine = {int(p) for p in np.flatnonzero(offsets != self.base)}
        now = time.time()
        claims = {p: (int(self.base[p]), int(offsets[p])) for p in mine}
        claimed = sum(e - max(s, 0) for s, e in claims.values())
        if claimed != msgs - self.msgs_base or not self.ledger.fits(claims):
            log.info("deltas: our claims %s do not match the %d messages learned (a partition "
                     "started from a stale offset) or no longer fit", claims, msgs - self.msgs_base)
            return False
        idx, vals = diff_delta(a.state, self.copy)
        scale = None
        if claims and not exact:  # idle (no records): the residual goes out exact, once
            idx, vals, scale = quantise(idx, vals)
        stats = merge(a.stats)
        self.base = offsets
        self.msgs_base = msgs
        self.last_sync = time.monotonic()
        if claims or idx.size or now - self.last_sent >= 5.0:  # an empty delta is a heartbeat
            self.seq += 1
            d = Delta(self.instance, self.seq, int(stats[0] - self.stats_copy[0]), claims, idx,
                      vals, a.bias - self.copy_bias, a.state[self.sample, 0].copy(), now, scale)
            self.pending, self._unsent = (d, stats, encode_delta(d)), True  # encoded while paused
        return True

    def publish(self) -> None:
        """After the workers resumed: send the captured delta (in parts if large) and flush.
        Encoding is done in ``step``: the workers learn beyond the bound only while this sends."""
        if self.pending is None or not self._unsent:
            return
        d, _, blob = self.pending
        n = max(1, -(-len(blob) // CHUNK_BYTES))
        for i in range(n):
            headers = [("hb.instance", d.instance.encode()), ("hb.seq", str(d.seq).encode()),
                       ("hb.part", f"{i}/{n}".encode()), ("hb.records", str(d.records).encode())]
            self.producer.produce(self.topic, blob[i * CHUNK_BYTES:(i + 1) * CHUNK_BYTES],
                                  key=d.instance.encode(), partition=0, headers=headers)
        if self.producer.flush(30):
            raise KafkaError("deltas: publish not acknowledged")
        self._unsent = False
        self.last_sent = d.created_at
        self.m.delta_published(len(blob), d.records, int(d.index.size))

    def _divergence(self, d: Delta) -> float:
        if d.sample.size != self.sample.size:
            return float("nan")
        return float(np.linalg.norm(self.a.state[self.sample, 0] - d.sample))

    def leader(self, horizon: float = 30.0) -> bool:
        """Publish models only if ours is the smallest id among instances heard recently."""
        now = time.time()
        live = [i for i, t in self.peers.items() if now - t <= horizon] + [self.instance]
        return min(live) == self.instance

    def close(self) -> None:
        self.producer.flush(10)
        self.consumer.close()


def _add(d: Delta, state: np.ndarray, bias: np.ndarray) -> None:
    if d.index.size:
        add_rows(state, d.index, np.ascontiguousarray(d.values, np.float32).reshape(-1, 2))
    bias += d.bias
