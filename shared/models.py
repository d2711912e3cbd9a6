"""The model store shared by trainer and scorer: snapshots on a compacted topic, or in a directory.

A snapshot travels as chunks (keys ``chunk/<version>/<i>``) followed by a manifest (key
``manifest/<version>``, JSON with the byte length and SHA-256 of the whole encoded model). The
models topic has one partition, so a watcher that meets a manifest has already met every chunk
it names; a model is handed out only when all of them are present and the checksum matches,
which is what "never a half model" rests on. Old versions are pruned by tombstones, manifest
first, so that compaction never leaves a manifest whose chunks are gone without the watcher
being able to tell (it would just find chunks missing and skip that version).

A trainer in ``--sync-deltas`` mode also publishes, before the manifest, its whole learning state
(keys ``state/<version>/<i>``, opaque bytes named in the manifest's ``state``) and in the
manifest's ``sync`` the ``hb.deltas`` position that state includes: a new instance starts from
it (``trainer/base.py``, docs/scale-out.md). Scorers skip those chunks.
"""
from __future__ import annotations

import hashlib
import json
import logging
import queue
import re
import struct
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, KafkaError as ConfluentKafkaError, KafkaException, TopicPartition

from shared.clients import MODEL_TOPIC_CONFIG, ensure_topics, make_consumer, make_producer
from shared.errors import HashbridgeError, KafkaError
from shared.hashspec import MAX_BITS, Algorithm, SpecId
from shared.settings import KafkaSettings

log = logging.getLogger(__name__)

MODEL_MAGIC = b"HBMD"
MODEL_FORMAT = 1
# magic, format, algorithm, bits, signed, spec version, key id, model version, records seen,
# created_at, bias, weight count; then f32 weights; then the SHA-256 of everything before it.
MODEL_HEADER = struct.Struct("<4sBBBBH8sQQddQ")
DIGEST_SIZE = 32
CHUNK_BYTES = 1024 * 1024
_CHUNK_KEY = re.compile(rb"^chunk/(\d+)/(\d+)$")
_MANIFEST_KEY = re.compile(rb"^manifest/(\d+)$")
STATE_KEY = re.compile(rb"^state/(\d+)/(\d+)$")


class ModelError(HashbridgeError):
    """A model blob, manifest or directory entry that fails validation."""

    reason = "bad_model"


@dataclass(frozen=True, eq=False)
class ModelSnapshot:
    """One published model: effective weights (f32, one per hashed index) plus the bias."""

    version: int
    spec: SpecId
    weights: np.ndarray
    bias: float
    records_seen: int
    created_at: float

    def __post_init__(self) -> None:
        if self.weights.dtype != np.float32 or self.weights.shape != (1 << self.spec.bits,):
            raise ValueError(f"weights must be float32[{1 << self.spec.bits}], got "
                             f"{self.weights.dtype}{list(self.weights.shape)}")
        if self.version < 1:
            raise ValueError("model versions start at 1")


def encode_model(snapshot: ModelSnapshot) -> bytes:
    """A self-checking blob: header, weights, SHA-256 of both."""
    s = snapshot.spec
    head = MODEL_HEADER.pack(MODEL_MAGIC, MODEL_FORMAT, int(s.algorithm), s.bits, int(s.signed), s.version,
                             s.key_id, snapshot.version, snapshot.records_seen, snapshot.created_at,
                             float(snapshot.bias), snapshot.weights.shape[0])
    body = head + np.ascontiguousarray(snapshot.weights, dtype="<f4").tobytes()
    return body + hashlib.sha256(body).digest()


def decode_model(buf: bytes | memoryview) -> ModelSnapshot:
    """Validate and decode a blob from :func:`encode_model`; raises :class:`ModelError`."""
    buf = memoryview(buf)
    if len(buf) < MODEL_HEADER.size + DIGEST_SIZE:
        raise ModelError(f"model blob of {len(buf)} bytes is shorter than its header", "model_truncated")
    body, digest = buf[:-DIGEST_SIZE], bytes(buf[-DIGEST_SIZE:])
    if hashlib.sha256(body).digest() != digest:
        raise ModelError("model checksum mismatch", "model_checksum")
    (magic, fmt, algorithm, bits, signed, spec_version, kid, version, seen, created, bias,
     n) = MODEL_HEADER.unpack_from(body, 0)
    if magic != MODEL_MAGIC or fmt != MODEL_FORMAT:
        raise ModelError("not a hashbridge model (magic or format)", "model_magic")
    if algorithm not in Algorithm._value2member_map_ or not 1 <= bits <= MAX_BITS or signed > 1:
        raise ModelError("model has an unsupported spec", "model_spec")
    if n != 1 << bits or len(body) != MODEL_HEADER.size + 4 * n:
        raise ModelError(f"model of 2^{bits} weights has {len(body) - MODEL_HEADER.size} weight bytes",
                         "model_length")
    weights = np.frombuffer(body, dtype="<f4", count=n, offset=MODEL_HEADER.size).astype(np.float32)
    if not (np.isfinite(weights).all() and np.isfinite(bias)):
        raise ModelError("model weights must be finite", "model_not_finite")
    try:
        spec = SpecId(Algorithm(algorithm), bits, bool(signed), kid, spec_version)
        return ModelSnapshot(version, spec, weights, bias, seen, created)
    except ValueError as exc:
        raise ModelError(str(exc), "model_spec") from exc


def _manifest(snapshot: ModelSnapshot, blob: bytes, n_chunks: int) -> dict[str, Any]:
    s = snapshot.spec
    return {"version": snapshot.version, "algorithm": int(s.algorithm), "bits": s.bits, "signed": s.signed,
            "spec_version": s.version, "key_id": s.key_id_hex, "n_chunks": n_chunks, "length": len(blob),
            "sha256": hashlib.sha256(blob).hexdigest(), "bias": float(snapshot.bias),
            "records_seen": snapshot.records_seen, "created_at": snapshot.created_at}


class ModelPublisher:
    """Publishes snapshots to the compacted models topic; keeps the newest ``keep`` versions."""

    def __init__(self, settings: KafkaSettings, keep: int = 3, chunk_bytes: int = CHUNK_BYTES) -> None:
        if keep < 1:
            raise ValueError("keep must be >= 1")
        self.topic, self.keep, self.chunk_bytes = settings.topics.models, keep, chunk_bytes
        ensure_topics(settings, {self.topic: 1}, configs={self.topic: MODEL_TOPIC_CONFIG})
        self._producer = make_producer(settings, **{"linger.ms": 20})
        self._errors: list[str] = []
        # versions already on the topic (from an earlier run): chunk and state chunk counts, for pruning
        self._live: dict[int, tuple[int, int]] = scan_manifests(settings)
        self.last_version = max(self._live, default=0)

    def _on_delivery(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self._errors.append(str(err))

    def _produce(self, key: bytes, value: bytes | None) -> None:
        while True:
            try:
                self._producer.produce(self.topic, key=key, value=value, on_delivery=self._on_delivery)
                return
            except BufferError:
                self._producer.poll(0.1)

    def _flush(self, timeout: float = 60.0) -> None:
        if self._producer.flush(timeout) or self._errors:
            errs, self._errors = self._errors[:3] or ["flush timed out"], []
            raise KafkaError(f"model publish not acknowledged: {'; '.join(errs)}")

    def publish(self, snapshot: ModelSnapshot, state: bytes | None = None,
                sync: dict[str, Any] | None = None) -> None:
        """Chunks (and ``state``'s), then the manifest (with ``sync``); returns once the broker
        acknowledged all, then prunes."""
        if snapshot.version <= self.last_version:
            raise ValueError(f"model version {snapshot.version} <= last published {self.last_version}")
        blob = encode_model(snapshot)
        n_chunks = max(1, -(-len(blob) // self.chunk_bytes))
        v = snapshot.version
        for i in range(n_chunks):
            self._produce(b"chunk/%d/%d" % (v, i), blob[i * self.chunk_bytes:(i + 1) * self.chunk_bytes])
        manifest = _manifest(snapshot, blob, n_chunks)
        n_state = 0
        if state is not None:
            n_state = max(1, -(-len(state) // self.chunk_bytes))
            for i in range(n_state):
                self._produce(b"state/%d/%d" % (v, i), state[i * self.chunk_bytes:(i + 1) * self.chunk_bytes])
            manifest["state"] = {"n_chunks": n_state, "length": len(state),
                                 "sha256": hashlib.sha256(state).hexdigest()}
            manifest["sync"] = sync
        self._produce(b"manifest/%d" % v, json.dumps(manifest).encode())
        self._flush()
        self.last_version = v
        self._live[v] = (n_chunks, n_state)
        log.info("published model version %d (%d bytes in %d chunks)", v, len(blob), n_chunks)
        self._prune()

    def _prune(self) -> None:
        old = sorted(self._live)[:-self.keep]
        for v in old:
            self._produce(b"manifest/%d" % v, None)  # manifest first: a watcher then ignores the chunks
            n_chunks, n_state = self._live[v]
            for i in range(n_chunks):
                self._produce(b"chunk/%d/%d" % (v, i), None)
            for i in range(n_state):
                self._produce(b"state/%d/%d" % (v, i), None)
        if old:
            self._flush()
            for v in old:
                del self._live[v]
            log.info("pruned model versions %s", old)

    def close(self) -> None:
        self._producer.flush(30.0)


def _parse_manifest(value: bytes) -> dict[str, Any]:
    try:
        m = json.loads(value)
        for field in ("version", "n_chunks", "length", "sha256"):
            if field not in m:
                raise ModelError(f"manifest lacks {field}", "bad_manifest")
        return m
    except (ValueError, TypeError) as exc:
        raise ModelError(f"manifest is not JSON: {exc}", "bad_manifest") from exc


def _watermarks(consumer: Any, tp: TopicPartition, timeout: float) -> tuple[int, int]:
    """Watermarks, retried while a just-created topic has no leader yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return consumer.get_watermark_offsets(tp, timeout=max(1.0, deadline - time.monotonic()))
        except KafkaException as exc:
            if time.monotonic() >= deadline:
                raise KafkaError(f"cannot read the models topic's offsets: {exc}") from exc
            time.sleep(0.2)  # leader election after topic creation; retried until the deadline


def read_topic(settings: KafkaSettings, timeout: float, keep: Any) -> None:
    """Read the models topic from its start to its current end, handing each record to ``keep``."""
    consumer = make_consumer(settings, f"hb-models-scan-{uuid.uuid4().hex}")
    try:
        lo, hi = _watermarks(consumer, TopicPartition(settings.topics.models, 0), timeout)
        if hi <= lo:
            return
        consumer.assign([TopicPartition(settings.topics.models, 0, OFFSET_BEGINNING)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for msg in consumer.consume(500, 0.5):
                if msg.error():
                    continue
                keep(msg)
                if msg.offset() >= hi - 1:
                    return
        raise KafkaError(f"could not read the models topic to its end within {timeout:.0f}s")
    finally:
        consumer.close()


def scan_manifests(settings: KafkaSettings, timeout: float = 30.0,
                    full: dict[int, dict[str, Any]] | None = None) -> dict[int, tuple[int, int]]:
    """Live versions on the topic (manifest present, not tombstoned) -> (chunks, state chunks);
    ``full``, if given, receives their manifests."""
    live: dict[int, dict[str, Any]] = {} if full is None else full

    def keep(msg: Any) -> None:
        if m := _MANIFEST_KEY.match(msg.key() or b""):
            v = int(m.group(1))
            if msg.value() is None:
                live.pop(v, None)
            else:
                try:
                    live[v] = _parse_manifest(msg.value())
                except ModelError:
                    pass

    read_topic(settings, timeout, keep)
    return {v: (int(m["n_chunks"]), int((m.get("state") or {}).get("n_chunks", 0))) for v, m in live.items()}


class ModelWatcher:
    """Follows the models topic from its start and hands out newer, complete, verified models.

    Checking and decoding a model (a 2^24 model is 64 MiB to join, hash and check) runs on a
    background assembler thread, never in :meth:`poll`: the caller's thread only files chunks
    by reference and, once the assembler has published a fully built snapshot, reads one
    reference. A snapshot is immutable (its weights are read-only), so there is no half model to
    see. Most of the assembler's work (SHA-256, numpy checks) releases the GIL.
    """

    def __init__(self, settings: KafkaSettings, consumer: Any = None) -> None:
        self.topic = settings.topics.models
        if consumer is None:
            ensure_topics(settings, {self.topic: 1}, configs={self.topic: MODEL_TOPIC_CONFIG})
            consumer = make_consumer(settings, f"hb-models-watch-{uuid.uuid4().hex}")
            consumer.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])
        self._consumer = consumer
        self._chunks: dict[int, dict[int, bytes]] = {}  # touched by the polling thread only
        self._latest: ModelSnapshot | None = None  # written by the assembler, one reference
        self._returned = 0
        self.rejected = 0
        self._decode = decode_model  # the step that takes time; tests may wrap it
        self._jobs: queue.SimpleQueue[tuple[int, bytes, dict[int, bytes]] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pending = 0  # manifests handed to the assembler and not finished yet
        self._finished = threading.Condition(self._lock)
        self._assembler = threading.Thread(target=self._assemble_loop, name="hb-model-assembler",
                                           daemon=True)
        self._assembler.start()

    @property
    def latest(self) -> ModelSnapshot | None:
        return self._latest

    @property
    def assembling(self) -> int:
        """Models handed to the assembler and not yet built or rejected."""
        return self._pending

    def _newer(self) -> ModelSnapshot | None:
        latest = self._latest  # one read: a whole snapshot or None
        return latest if latest is not None and latest.version > self._returned else None

    def poll(self, timeout: float) -> ModelSnapshot | None:
        """A model newer than the last one returned, or None once ``timeout`` passes without one.

        ``poll(0)`` never blocks on assembly or on the broker: it files what was already fetched
        and returns whatever the assembler finished.
        """
        deadline = time.monotonic() + timeout
        while True:
            msgs = self._consumer.consume(500, 0)  # only what the client already fetched
            for msg in msgs:
                self._handle(msg)
            newer = self._newer()
            remaining = deadline - time.monotonic()
            if newer is not None and (not msgs or remaining <= 0):
                self._returned = newer.version
                newest = newer.version
                for v in [v for v in self._chunks if v <= newest]:
                    del self._chunks[v]
                return newer
            if remaining <= 0:
                return None
            if msgs:
                continue
            if self._pending:  # wait for the assembler (or the deadline), not for the broker
                with self._finished:
                    if self._pending:
                        self._finished.wait(min(remaining, 0.5))
            else:
                msg = self._consumer.poll(min(remaining, 0.5))
                if msg is not None:
                    self._handle(msg)

    def _handle(self, msg: Any) -> None:
        if msg.error():
            if msg.error().code() != ConfluentKafkaError._PARTITION_EOF:
                log.warning("models topic error: %s", msg.error())
            return
        key, value = msg.key() or b"", msg.value()
        newest = self._latest.version if self._latest else 0
        if m := _CHUNK_KEY.match(key):
            v, i = int(m.group(1)), int(m.group(2))
            if value is None:
                self._chunks.get(v, {}).pop(i, None)
            elif v > newest:
                self._chunks.setdefault(v, {})[i] = value
        elif m := _MANIFEST_KEY.match(key):
            v = int(m.group(1))
            if value is not None and v > newest:
                with self._lock:
                    self._pending += 1
                self._jobs.put((v, value, self._chunks.pop(v, {})))  # the assembler owns the parts now
        elif STATE_KEY.match(key):
            pass  # a trainer's state for new instances (trainer/base.py); scorers do not need it
        else:
            log.warning("models topic: ignoring a record with an unknown key at offset %d", msg.offset())

    def _assemble_loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                self._assemble(*job)
            except Exception:  # noqa: BLE001 - the assembler must outlive one bad model
                self.rejected += 1
                log.exception("skipping model version %d: assembly failed", job[0])
            finally:
                with self._finished:
                    self._pending -= 1
                    self._finished.notify_all()

    def _assemble(self, version: int, manifest_value: bytes, parts: dict[int, bytes]) -> None:
        if self._latest is not None and self._latest.version >= version:
            return  # a newer model was built meanwhile
        try:
            m = _parse_manifest(manifest_value)
            n = int(m["n_chunks"])
            if int(m["version"]) != version:
                raise ModelError("manifest version differs from its key", "bad_manifest")
            if any(i not in parts for i in range(n)):
                raise ModelError(f"model {version} misses {sum(i not in parts for i in range(n))} of {n} chunks",
                                 "model_incomplete")
            blob = b"".join(parts[i] for i in range(n))
            if len(blob) != int(m["length"]) or hashlib.sha256(blob).hexdigest() != m["sha256"]:
                raise ModelError(f"model {version} fails its manifest checksum", "model_checksum")
            snapshot = self._decode(blob)
            if snapshot.version != version:
                raise ModelError("model blob version differs from its manifest", "bad_manifest")
        except ModelError as exc:
            self.rejected += 1
            log.warning("skipping model version %d: %s (%s)", version, exc, exc.reason)
            return
        snapshot.weights.flags.writeable = False  # shared with the serving thread: immutable
        self._latest = snapshot  # the swap: one reference, to a fully built snapshot
        log.info("assembled model version %d (%d records seen)", version, snapshot.records_seen)

    def close(self) -> None:
        self._jobs.put(None)
        self._assembler.join(30)
        self._consumer.close()
