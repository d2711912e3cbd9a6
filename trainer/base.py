"""A new instance starts from the merged model on ``hb.models``, not from offset 0 of ``hb.deltas``.

The model publisher (the leader, ``DeltaSync.leader``) publishes its *accepted cut*: the sum of
the accepted deltas at ``hb.deltas`` offsets below ``deltas_next``, nothing else (not its own
unpublished learning, not its delta in flight, which lies at or after ``deltas_next``). Beside the
scorers' weights it sends the whole state (weights and accumulators, bias) and, in the manifest,
``deltas_next`` and the ledger at that position. A new instance restores exactly that, as if it
were its own snapshot, and reads the log from ``deltas_next``: every accepted delta is then in its
model exactly once, before the position through the base, after it through the log (the
invariant, stated and argued in docs/scale-out.md, is tested in tests/unit/test_deltas.py).
"""
from __future__ import annotations

import hashlib
import logging
from typing import Any

import numpy as np

from shared.clients import MODEL_TOPIC_CONFIG, ensure_topics
from shared.hashspec import Algorithm, SpecId
from shared.models import STATE_KEY, ModelSnapshot, read_topic, scan_manifests
from shared.settings import KafkaSettings
from trainer.checkpoint import Checkpoint
from trainer.kernels import STATS_LEN
from trainer.model import Hyper, effective_weights

log = logging.getLogger(__name__)


def encode_state(state: np.ndarray, bias: np.ndarray) -> bytes:
    """Little-endian float32 state rows, then the float64 bias pair: exact, so a base equals the cut."""
    return np.ascontiguousarray(state, "<f4").tobytes() + np.asarray(bias, "<f8").tobytes()


def decode_state(blob: bytes, bits: int) -> tuple[np.ndarray, np.ndarray]:
    n = 1 << bits
    if len(blob) != n * 8 + 16:
        raise ValueError(f"trainer state of {len(blob)} bytes is not 2^{bits} rows")
    state = np.frombuffer(blob, "<f4", 2 * n).reshape(n, 2).astype(np.float32)
    return state, np.frombuffer(blob, "<f8", 2, 8 * n).astype(np.float64)


def publish_model(publisher: Any, ckpt: Checkpoint) -> None:
    """Scorers' weights; with a sync cut also the state and its ``hb.deltas`` position."""
    assert ckpt.spec is not None
    w, b = effective_weights(ckpt.hyper, ckpt.state, ckpt.bias)
    if ckpt.sync is None:
        publisher.publish(ModelSnapshot(ckpt.version, ckpt.spec, w, b, ckpt.records, ckpt.created_at))
        return
    ledger = ckpt.sync["ledger"]
    sync = {"deltas_next": int(ckpt.sync["deltas_next"]), "ledger": ledger,
            "hyper": ckpt.hyper.as_dict(), "instance": ckpt.sync.get("instance")}
    publisher.publish(ModelSnapshot(ckpt.version, ckpt.spec, w, b, int(ledger["records"]), ckpt.created_at),
                      encode_state(ckpt.state, ckpt.bias), sync)


def read_base(settings: KafkaSettings, timeout: float = 60.0) -> tuple[dict[str, Any], bytes] | None:
    """The live manifest whose ``sync`` position is furthest into ``hb.deltas`` with its state
    chunks all present and matching its checksum, and that state; None if there is none.

    Two passes over the topic (manifests, then the chosen state's chunks) so that only one state
    is held in memory; a version pruned in between is skipped for the next best.
    """
    ensure_topics(settings, {settings.topics.models: 1}, configs={settings.topics.models: MODEL_TOPIC_CONFIG})
    manifests: dict[int, dict[str, Any]] = {}
    scan_manifests(settings, timeout, manifests)
    ranked = sorted((v for v, m in manifests.items() if m.get("sync") and m.get("state")),
                    key=lambda v: (int(manifests[v]["sync"]["deltas_next"]), v), reverse=True)
    for v in ranked[:3]:
        parts: dict[int, bytes] = {}

        def keep(msg: Any, v: int = v) -> None:
            m = STATE_KEY.match(msg.key() or b"")
            if m and int(m.group(1)) == v:
                if msg.value() is None:
                    parts.pop(int(m.group(2)), None)
                else:
                    parts[int(m.group(2))] = msg.value()

        read_topic(settings, timeout, keep)
        st = manifests[v]["state"]
        blob = b"".join(parts.get(i, b"") for i in range(int(st["n_chunks"])))
        if len(blob) == int(st["length"]) and hashlib.sha256(blob).hexdigest() == st["sha256"]:
            return manifests[v], blob
        log.warning("model version %d: trainer state incomplete or corrupt; trying an older one", v)
    return None


def base_checkpoint(manifest: dict[str, Any], blob: bytes, topic: str) -> Checkpoint:
    """The published cut as a snapshot a new instance restores (own stats start at zero)."""
    sync = manifest["sync"]
    state, bias = decode_state(blob, int(manifest["bits"]))
    spec = SpecId(Algorithm(int(manifest["algorithm"])), int(manifest["bits"]), bool(manifest["signed"]),
                  bytes.fromhex(manifest["key_id"]), int(manifest["spec_version"]))
    version, position = int(manifest["version"]), int(sync["deltas_next"])
    ends = {int(p): int(e) for p, e in sync["ledger"]["ends"].items()}
    return Checkpoint(version, topic, ends, state, bias, np.zeros(STATS_LEN), Hyper.from_dict(sync["hyper"]),
                      spec, float(manifest["created_at"]),
                      {"deltas_next": position, "seq": 0, "ledger": sync["ledger"],
                       "origin": {"model_version": version, "deltas_next": position}})


def load_base(settings: KafkaSettings, topic: str) -> Checkpoint | None:
    """The newest published cut, or None (the instance then replays ``hb.deltas`` from 0)."""
    found = read_base(settings)
    if found is None:
        log.info("no published model with a trainer state: reading the deltas log from its start")
        return None
    ckpt = base_checkpoint(*found, topic)
    log.info("starting from published model version %d: %d records, hb.deltas offset %d",
             ckpt.version, int(ckpt.sync["ledger"]["records"]), int(ckpt.sync["deltas_next"]))
    return ckpt
