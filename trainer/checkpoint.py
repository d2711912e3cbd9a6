"""Snapshots: the whole learning state and every partition's next offset, in one atomic file.

A snapshot is one uncompressed ``.npz`` named ``snapshot-<version>.npz``, written to a temporary
name, fsynced, renamed, and the directory fsynced: a reader sees the old file or the new one,
never a torn one. Because weights, optimizer state, progressive metrics, the record count and
the offsets travel together, restoring a snapshot and seeking every partition to its stored
offset resumes learning exactly where the snapshot was taken (see docs/trainer.md).
"""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shared.hashspec import Algorithm, SpecId
from trainer.model import Hyper

_FILE = re.compile(r"^snapshot-(\d{12})\.npz$")


@dataclass(frozen=True, slots=True, eq=False)
class Checkpoint:
    """One snapshot's content; ``stats`` is the merged progressive-validation row."""

    version: int
    topic: str
    offsets: dict[int, int]  # partition -> next offset to learn
    state: np.ndarray  # float32[2**bits, 2]
    bias: np.ndarray  # float64[2]
    stats: np.ndarray  # float64[STATS_LEN]
    hyper: Hyper
    spec: SpecId | None
    created_at: float = field(default_factory=time.time)
    sync: dict | None = None  # --sync-deltas: deltas position, own sequence, accepted ledger

    @property
    def records(self) -> int:
        return int(self.stats[0])

    @property
    def bits(self) -> int:
        return int(self.state.shape[0]).bit_length() - 1


def spec_to_dict(spec: SpecId | None) -> dict | None:
    if spec is None:
        return None
    return {"algorithm": int(spec.algorithm), "bits": spec.bits, "signed": spec.signed,
            "key_id": spec.key_id.hex(), "version": spec.version}


def spec_from_dict(d: dict | None) -> SpecId | None:
    if d is None:
        return None
    return SpecId(Algorithm(d["algorithm"]), int(d["bits"]), bool(d["signed"]),
                  bytes.fromhex(d["key_id"]), int(d["version"]))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def snapshot_files(directory: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    d = Path(directory)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), d / p.name) for p in d.iterdir() if (m := _FILE.match(p.name))]
    return sorted(found)


def write_checkpoint(directory: str | os.PathLike[str], ckpt: Checkpoint, keep: int = 3) -> Path:
    """Write atomically (write, fsync, rename, fsync dir); keep the newest ``keep`` files."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    meta = {"version": ckpt.version, "topic": ckpt.topic, "created_at": ckpt.created_at,
            "hyper": ckpt.hyper.as_dict(), "spec": spec_to_dict(ckpt.spec),
            "records": ckpt.records}
    if ckpt.sync is not None:
        meta["sync"] = ckpt.sync
    parts = np.array(sorted(ckpt.offsets.items()), np.int64).reshape(-1, 2)
    final = d / f"snapshot-{ckpt.version:012d}.npz"
    tmp = d / f".{final.name}.{os.getpid()}.tmp"
    with open(tmp, "wb") as fh:
        np.savez(fh, state=ckpt.state, bias=ckpt.bias, stats=ckpt.stats, offsets=parts,
                 meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    _fsync_dir(d)
    for _, old in snapshot_files(d)[:-keep]:
        old.unlink(missing_ok=True)
    return final


def read_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    with np.load(path) as z:
        meta = json.loads(bytes(z["meta"]).decode())
        offsets = {int(p): int(o) for p, o in z["offsets"]}
        return Checkpoint(int(meta["version"]), meta["topic"], offsets, z["state"], z["bias"],
                          z["stats"], Hyper.from_dict(meta["hyper"]), spec_from_dict(meta["spec"]),
                          float(meta["created_at"]), meta.get("sync"))


def read_records(path: str | os.PathLike[str]) -> int:
    """The record count of one snapshot, from its small metadata member alone (a poller does not
    need to read the model state to see how far learning got)."""
    with np.load(path) as z:
        records = json.loads(bytes(z["meta"]).decode()).get("records")
        return int(z["stats"][0]) if records is None else int(records)


def load_latest(directory: str | os.PathLike[str]) -> Checkpoint | None:
    """The newest snapshot in ``directory``, or None when there is none yet."""
    files = snapshot_files(directory)
    return read_checkpoint(files[-1][1]) if files else None
