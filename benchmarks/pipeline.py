"""The whole pipeline, end to end: CSV -> ``hashbridge produce`` -> Kafka -> ``hashbridge train``
(2 Hogwild workers) -> a snapshot that has learned every record.

``python -m benchmarks.pipeline [--quick]`` writes ``benchmarks/results/pipeline.json``.

The parts' own figures (producer columnar, trainer via Kafka) each leave the other stage out; this
one runs both as the product runs them, concurrently, as subprocesses on the same 2 cores with the
broker. The trainer is started first and the clock starts only once its consumer group is stable,
every worker holding partitions (start-up and group join are not pipeline throughput; before
session 11 the clock started when the first worker held them all, so one worker learned everything
while the rebalance that brings in the second was still pending); the clock stops when a snapshot
on disk counts all N records, so the figure includes the last snapshot's latency: the trainer
snapshots once it has learned up to the producer's end-of-input markers on every partition
(``docs/wire-format.md``), or once its input has been quiet for ``IDLE_SECONDS``
(``--checkpoint-idle-seconds``), and otherwise at its default intervals; each run records which. Each repetition uses a fresh topic prefix, consumer group and
checkpoint directory. The final model is scored on the generator's test split, hashed by the
producer's own columnar path with the same schema and key.

Two ways of running the producer, interleaved repetition by repetition:

* ``cold``: one ``hashbridge produce --input FILE`` per run, its interpreter start, imports, broker
  connection and kernel loading inside the clock (~0.7-1 s here, as long as hashing the file);
* ``watch``: the producer as deployed beside the source systems, ``hashbridge produce --watch DIR``,
  started before the clock (a fresh process per run, so its value tables start empty) and ready;
  the clock starts when the CSV is renamed into DIR. Vowpal Wabbit's own start-up is a few
  milliseconds of C++, so this is the like-for-like figure for a service against a one-shot tool.

Each repetition also times Vowpal Wabbit's binary-cache passes over the same rows
(``benchmarks.vwpaired``), rotated with the two runs, and each run is divided by VW's best pass of
its own repetition: the paired ratio that decides the headline's verdict.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import datagen
from benchmarks.common import DEADLINE_ENV, StageCpu, write_result
from benchmarks.pipesummary import MODES, summarise
from benchmarks.vwpaired import VwPaired

BITS, WORKERS, PARTITIONS = 20, 2, 4
END_POLL = 0.002  # once the producer is done, the snapshot is looked for this often (was 0.02 s:
# ~10 ms of the clock on average was the harness's own polling, not the pipeline's)
IDLE_SECONDS = 0.1  # the trainer snapshots this long after its input went quiet: the clock's end
READY_TIMEOUT, RUN_TIMEOUT = 90.0, 150.0
SCHEMA = """# written by benchmarks/pipeline.py: every generated column is categorical
header = true
delimiter = ","
categorical = [{fields}]

[hash]
algorithm = "blake2b"
bits = {bits}
signed = false

[label]
column = "label"
positive = ["1"]
negative = ["0"]
"""
_ASSIGNMENT = re.compile(r"worker (\d+) (assigned|revoked) partitions \[([\d, ]*)\]")
_CHECKPOINT = re.compile(r"checkpoint version \d+ \((\w+)\)")
_PRODUCER_RATE = re.compile(r"published ([\d,]+) in ([\d,]+) frames \(([\d,]+) records/s\)")


def _hashbridge() -> str:
    """The ``hashbridge`` console script beside this interpreter (the venv's), else on PATH."""
    exe = Path(sys.executable).with_name("hashbridge")
    return str(exe) if exe.exists() else "hashbridge"


def write_schema(path: Path) -> Path:
    path.write_text(SCHEMA.format(fields=", ".join(f'"{f}"' for f in datagen.field_names()), bits=BITS))
    return path


def _holding(log: Path) -> dict[int, set[int]]:
    """The partitions each trainer worker holds now, from its log's assigned and revoked lines."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return {}
    held: dict[int, set[int]] = {}
    for m in _ASSIGNMENT.finditer(text):
        parts = {int(p) for p in m.group(3).replace(",", " ").split()}
        mine = held.setdefault(int(m.group(1)), set())
        if m.group(2) == "assigned":
            mine |= parts
        else:
            mine -= parts
    return held


def _group_ready(log: Path, workers: int) -> bool:
    """Every worker holds partitions and together they hold all of them: the group is stable.

    The first worker to join is assigned every partition at once (the local broker's
    ``group.initial.rebalance.delay.ms`` is 0), and the others join at the next rebalance, which
    waits for its heartbeat (~1.7 s): a clock started before then would time one worker, with a
    rebalance pending."""
    held = _holding(log)
    busy = [p for p in held.values() if p]
    return len(busy) == workers and set().union(*busy) == set(range(PARTITIONS))


def _stop(proc: subprocess.Popen, timeout: float = 30.0) -> int | None:
    """SIGTERM the process group (the trainer writes its final snapshot), SIGKILL if it hangs."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            return proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
    return proc.poll()


def _tail(path: Path, n: int = 8) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-n:])
    except OSError:
        return ""


def _producer_args(bootstrap: str, schema_path: Path, key_path: Path, prefix: str) -> list[str]:
    return ["--schema", str(schema_path), "--key", str(key_path), "--bootstrap", bootstrap, "--topic-prefix", prefix,
            "--no-create-topics", "--no-progress", "--compression", "none"]


def _watching_producer(args: list[str], spool: Path, log_fh: Any, log: Path) -> subprocess.Popen:
    """A ``--watch`` producer, once it says it is ready (kernels warm, broker connected)."""
    spool.mkdir()
    proc = subprocess.Popen([_hashbridge(), "produce", "--watch", str(spool), *args], stdout=log_fh,
                            stderr=subprocess.STDOUT, start_new_session=True)
    t = time.perf_counter()
    while "ready: watching" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.perf_counter() - t > READY_TIMEOUT:
            raise RuntimeError(f"watching producer not ready (exit {proc.poll()}): {_tail(log)}")
        time.sleep(0.02)
    return proc


def _stage(csv: Path, spool: Path) -> Path:
    """The CSV under a hidden name in the spool (a hard link where it can: no copy in the way)."""
    hidden = spool / f".{csv.name}"
    try:
        os.link(csv, hidden)
    except OSError:
        shutil.copyfile(csv, hidden)
    return hidden


def one_run(bootstrap: str, csv: Path, schema_path: Path, key_path: Path, key_hex: str, n: int,
            work: Path, mode: str = "cold") -> dict[str, Any]:
    """One repetition: fresh topics and checkpoint dir; returns timings and the final snapshot dir."""
    from shared.clients import delete_pipeline_topics, ensure_pipeline_topics
    from shared.settings import KafkaSettings
    from trainer.checkpoint import snapshot_files
    from trainer.launch import snapshot_records, start_trainer

    prefix = f"benchpipe{uuid.uuid4().hex[:8]}."
    ks = KafkaSettings.from_env(bootstrap=bootstrap, prefix=prefix)
    ensure_pipeline_topics(ks, partitions=PARTITIONS)
    ckdir, tlog, plog = work / f"ck-{prefix}", work / f"trainer-{prefix}log", work / f"producer-{prefix}log"
    spool = work / f"spool-{prefix}"
    trainer = start_trainer(
        ["--bootstrap", bootstrap, "--topic-prefix", prefix, "--group", f"bench-{prefix}",
         "--workers", str(WORKERS), "--bits", str(BITS), "--key-id", key_hex, "--checkpoint-dir", str(ckdir),
         "--checkpoint-idle-seconds", str(IDLE_SECONDS), "--keep", "2",
         "--no-publish", "--report-seconds", "3600"], log_path=tlog)
    out: dict[str, Any] = {"prefix": prefix, "mode": mode}
    producer = None
    args = _producer_args(bootstrap, schema_path, key_path, prefix)
    try:
        with open(plog, "wb") as plog_fh:
            if mode == "watch":  # started (and ready) before the clock, like the trainer
                producer = _watching_producer(args, spool, plog_fh, plog)
                hidden = _stage(csv, spool)
            t_start = time.perf_counter()
            while not _group_ready(tlog, WORKERS):
                if trainer.poll() is not None:
                    raise RuntimeError(f"trainer exited {trainer.returncode} before it was ready: {_tail(tlog)}")
                if time.perf_counter() - t_start > READY_TIMEOUT:
                    raise RuntimeError(f"trainer not assigned all partitions in {READY_TIMEOUT:.0f} s: {_tail(tlog)}")
                time.sleep(0.1)
            out["trainer_ready_seconds"] = time.perf_counter() - t_start
            cpu = StageCpu(trainer.pid)
            if producer is not None:
                cpu.producer_pid = producer.pid
            t0 = time.perf_counter()
            cpu.start()
            if mode == "watch":
                os.rename(hidden, spool / csv.name)  # the clock's start: the file lands
            else:
                producer = subprocess.Popen([_hashbridge(), "produce", "--input", str(csv), *args], stdout=plog_fh,
                                            stderr=subprocess.STDOUT, start_new_session=True)
                cpu.producer_pid = producer.pid
        done = spool / "done" / csv.name
        t_prod = t_end = None
        seen_version, learned = -1, -1
        while t_end is None:
            now = time.perf_counter()
            cpu.poll()
            if t_prod is None and mode == "watch" and done.exists():
                t_prod = now  # every record of the file acknowledged by the broker
            elif t_prod is None and producer.poll() is not None:
                if mode == "watch" or producer.returncode != 0:
                    raise RuntimeError(f"producer exited {producer.returncode}: {_tail(plog)}")
                t_prod = now
            files = snapshot_files(ckdir) if ckdir.exists() else []
            if files and files[-1][0] != seen_version:  # load a snapshot only when a new one appears
                seen_version, learned = files[-1][0], snapshot_records(ckdir)
                if learned >= n:
                    t_end = now
            if trainer.poll() is not None:
                raise RuntimeError(f"trainer exited {trainer.returncode} while learning: {_tail(tlog)}")
            if now - t0 > RUN_TIMEOUT:
                raise RuntimeError(f"only {learned} of {n} records learned after {RUN_TIMEOUT:.0f} s")
            time.sleep(0.02 if t_prod is None else END_POLL)
        out["cpu"] = cpu.stop()
        if t_prod is None:  # every record learned before the producer had finished (a one-shot
            if mode == "watch":  # process's flush, report and exit; a watcher's move to done/)
                while not done.exists() and time.perf_counter() - t0 < RUN_TIMEOUT:
                    time.sleep(0.005)
            else:
                producer.wait(30)
                if producer.returncode != 0:
                    raise RuntimeError(f"producer exited {producer.returncode}: {_tail(plog)}")
            t_prod = time.perf_counter()
        if mode == "watch":
            _stop(producer, 10)
        m = _PRODUCER_RATE.search(plog.read_text(errors="replace"))
        out.update(records=learned, seconds=t_end - t0, rate=n / (t_end - t0),
                   producer_seconds=t_prod - t0, producer_rate=n / (t_prod - t0),
                   # < 0: the snapshot held every record before the producer had finished (a
                   # process's final flush, report and exit); counted as no lag
                   trainer_lag_seconds=max(0.0, t_end - t_prod), trainer_lag_raw_seconds=t_end - t_prod,
                   snapshot_version=seen_version,
                   producer_reported_rate=float(m.group(3).replace(",", "")) if m else None)
    finally:
        if producer is not None and producer.poll() is None:
            _stop(producer, 10)
        out["trainer_exit"] = _stop(trainer)
        delete_pipeline_topics(ks)  # waits for the broker; failures are logged, never raised
    triggers = _CHECKPOINT.findall(tlog.read_text(errors="replace")) if tlog.exists() else []
    out["final_trigger"] = triggers[-1] if triggers else None
    out["checkpoint_dir"] = str(ckdir)
    return out


def final_auc(ckdir: Path, test_csv: Path, schema_path: Path, key: bytes) -> dict[str, float]:
    """AUC/logloss of the final snapshot on the test split, hashed by the producer's columnar path."""
    from producer.hashing import make_hasher
    from producer.schema import load_schema
    from producer.sources import open_source
    from scorer.scoring import predict_numpy
    from shared.models import ModelSnapshot
    from trainer.checkpoint import load_latest
    from trainer.model import effective_weights

    ckpt = load_latest(ckdir)
    if ckpt is None:
        raise RuntimeError(f"no snapshot in {ckdir}")
    w, b = effective_weights(ckpt.hyper, ckpt.state, ckpt.bias)
    model = ModelSnapshot(ckpt.version, ckpt.spec, w, b, ckpt.records, ckpt.created_at)
    schema = load_schema(schema_path)
    hasher = make_hasher(schema, key)
    probs, labels = [], []
    for chunk in open_source(str(test_csv), schema, schema.input_columns):
        enc = hasher.batch(chunk.batch)
        probs.append(predict_numpy(model, enc.offsets, enc.indices, enc.values))
        labels.append(enc.labels)
    y, p = np.concatenate(labels), np.concatenate(probs)
    return {"auc": datagen.auc(y, p), "logloss": datagen.logloss(y, p), "test_rows": int(y.shape[0]),
            "snapshot_records": int(ckpt.records)}


def run(quick: bool = False) -> dict:
    from hashbridge.localkafka import resolve_bootstrap
    from producer.keys import write_key
    from shared.hashspec import key_id

    n_rows = 100_000 if quick else 1_000_000
    reps = 2 if quick else 5
    files = datagen.synthetic_files(n_rows, 0)  # generated and cached before any clock
    meta = __import__("json").loads(files["meta"].read_text())
    n = int(meta["n_train"])
    figures: dict[str, Any] = {"rows": n_rows, "records": n, "fields": datagen.N_FIELDS, "bits": BITS,
                               "workers": WORKERS, "partitions": PARTITIONS, "compression": "none",
                               "snapshot_idle_seconds": IDLE_SECONDS, "best_auc": meta["best_auc"]}
    runs: list[dict[str, Any]] = []
    errors: list[str] = []
    try:
        vw: VwPaired | None = VwPaired(n_rows, BITS)  # its binary cache built before any clock
    except Exception as exc:  # noqa: BLE001 - no VW (the bench extras): the ratios stay unpaired, said so
        vw = None
        figures["vw_error"] = f"{type(exc).__name__}: {exc}"
    with tempfile.TemporaryDirectory(prefix="hb-bench-pipeline-") as tmp, resolve_bootstrap() as lease:
        work = Path(tmp)
        figures["broker"] = lease.source
        key_path = work / "bench.key"
        key = write_key(key_path)  # a fresh key: nothing learned before can match it
        schema_path = write_schema(work / "bench.schema.toml")

        def run_once(mode: str) -> dict[str, Any]:
            return one_run(lease.bootstrap, files["train_csv"], schema_path, key_path, key_id(key).hex(), n, work,
                           mode)

        # one unmeasured run first: the broker's JIT compiles the paths of this traffic (large frames
        # from an idempotent producer, fetched by a group) during it, not during a measured run
        try:
            warm = run_once("watch")
            figures["warmup_run"] = {k: warm[k] for k in ("rate", "cpu") if k in warm}
        except Exception as exc:  # noqa: BLE001 - the measured runs say whether the pipeline works
            figures["warmup_run"] = {"error": f"{type(exc).__name__}: {exc}"}
        deadline, t_reps = float(os.environ.get(DEADLINE_ENV, "inf")), time.time()
        slots = (*MODES, "vw") if vw is not None else MODES
        for rep in range(reps):
            per_rep = (time.time() - t_reps) / max(rep, 1)
            if rep and time.time() + 1.3 * per_rep + 15 > deadline:  # the harness would kill us: stop
                errors.append(f"rep {rep + 1}: skipped, short of the harness's time limit")
                break
            mine: list[dict[str, Any]] = []
            vw_best = None
            for slot in slots[rep % len(slots):] + slots[:rep % len(slots)]:  # rotated: each first in turn
                if slot == "vw" and vw is not None:
                    try:
                        vw_best = vw.measure()["best"]
                        print(f"  rep {rep + 1}/{reps} vw: " + ", ".join(f"{k} {v:,.0f}" for k, v in vw.reps[-1].items())
                              + " rec/s", flush=True)
                    except Exception as exc:  # noqa: BLE001 - this rep's ratios go unpaired, said so
                        errors.append(f"rep {rep + 1} vw: {type(exc).__name__}: {exc}")
                    continue
                try:
                    r = run_once(slot)
                except Exception as exc:  # noqa: BLE001 - one failed repetition is reported, the rest run
                    errors.append(f"rep {rep + 1} {slot}: {type(exc).__name__}: {exc}")
                    print(f"  rep {rep + 1}/{reps}: {errors[-1]}", flush=True)
                    continue
                try:
                    r.update(final_auc(Path(r["checkpoint_dir"]), files["test_csv"], schema_path, key))
                except Exception as exc:  # noqa: BLE001
                    r["auc_error"] = f"{type(exc).__name__}: {exc}"
                mine.append(r)
                print(f"  rep {rep + 1}/{reps} {slot}: {r['rate']:,.0f} rec/s end to end ({r['seconds']:.2f} s; "
                      f"producer {r['producer_seconds']:.2f} s, trainer lag {r['trainer_lag_seconds']:.2f} s; "
                      f"AUC {r.get('auc', float('nan')):.4f})", flush=True)
            for r in mine:
                r["vw_best_same_rep"] = vw_best
            runs += mine
    notes = summarise(figures, runs, vw.reps if vw is not None else [], n, n_rows, meta["best_auc"])
    if vw is None:
        notes.append(f"Vowpal Wabbit was not run in the repetitions ({figures['vw_error']}): the headline "
                     "compares the pipeline with the head-to-head's VW figure instead")
    figures["runs"] = runs
    if errors:
        figures["errors"] = errors
        notes.append(f"{len(errors)} of {reps} repetitions failed or were skipped: " + "; ".join(errors))
    notes.append(f"machine load average at the end: {os.getloadavg()[0]:.1f} (2 cores, shared)")
    write_result("pipeline", figures, notes)
    if not runs:
        raise RuntimeError("every pipeline repetition failed: " + "; ".join(errors))
    return {"figures": figures, "notes": notes}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    res = run(ap.parse_args().quick)
    for note in res["notes"]:
        print(note)


if __name__ == "__main__":
    main()
