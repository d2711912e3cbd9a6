"""``hashbridge demo``: the whole pipeline on UCI Adult, on one machine, in under two minutes.

Starts a broker if none is configured, a trainer (2 Hogwild workers) and a scorer as
subprocesses, streams adult.data through the producer, waits for a model that has seen every
record, scores adult.test through the scorer, and compares with an exact one-hot logistic
regression fitted locally. Everything it started is stopped again, whatever happens.
"""
from __future__ import annotations

from shared.startup import pin_blas_threads

pin_blas_threads()  # the baseline's BLAS must not fight the pipeline for 2 cores (also when run with -m)

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from contextlib import ExitStack  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from hashbridge import baseline as bl  # noqa: E402
from shared.datasets import adult_dir  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = adult_dir()
SCHEMA = REPO / "examples" / "adult.schema.toml"
BITS = 20


def say(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(stack: ExitStack, args: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", *args], env=env, stdout=log_path.open("w"),
                            stderr=subprocess.STDOUT, cwd=REPO)

    def stop() -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
    stack.callback(stop)
    return proc


def evaluate(scored_csv: Path, labels: dict[int, int]) -> tuple[dict[str, float], set[int]]:
    ys, ps, versions = [], [], set()
    with scored_csv.open() as fh:
        for row in csv.DictReader(fh):
            if row.get("status", "ok") != "ok" or not row.get("probability"):
                continue
            line = int(row["local_id"])
            if line in labels:
                ys.append(labels[line])
                ps.append(float(row["probability"]))
                versions.add(int(row["model_version"]))
    y, p = np.array(ys, float), np.array(ps)
    return {"auc": bl.auc(y, p), "logloss": bl.logloss(y, p), "records": len(ys)}, versions


def run_demo(args: argparse.Namespace) -> dict:
    from hashbridge.localkafka import resolve_bootstrap
    from hashbridge.plots import learning_curve, read_curve
    from trainer.supervisor import CURVE_FILE
    from shared.models import ModelWatcher
    from shared.settings import KafkaSettings, Topics
    from shared.clients import delete_pipeline_topics

    t_start = time.monotonic()
    out_dir = Path(args.out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    figures: dict = {"passes": args.passes}
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hb-demo-")))
        say("finding a Kafka cluster (HASHBRIDGE_BOOTSTRAP, else a local broker) ...")
        lease = stack.enter_context(resolve_bootstrap())
        say(f"Kafka at {lease.bootstrap} ({lease.source})")
        prefix = f"demo{uuid.uuid4().hex[:8]}."
        env = {**os.environ, "HASHBRIDGE_BOOTSTRAP": lease.bootstrap, "HASHBRIDGE_TOPIC_PREFIX": prefix,
               "PYTHONPATH": str(REPO)}
        kafka = KafkaSettings(bootstrap=lease.bootstrap, topics=Topics(prefix=prefix))
        # after the services stop (the stack unwinds in reverse), before the broker does
        stack.callback(delete_pipeline_topics, kafka)
        schema = work / SCHEMA.name
        shutil.copy(SCHEMA, schema)  # the producer writes its quantile edges next to the schema
        key = work / "owner.key"
        _keygen(key)
        from producer.keys import read_key
        from shared.hashspec import key_id

        from shared.clients import ensure_pipeline_topics
        ensure_pipeline_topics(kafka)
        port = free_port()
        _, train_labels = bl.read_adult(DATA / "adult.data")
        per_pass = len(train_labels)
        say("starting trainer (2 workers) and scorer ...")
        # the key id is public (a one-way fingerprint): the trainer refuses any other key space
        trainer = spawn(stack, ["trainer", "--workers", "2", "--bits", str(BITS), "--group", f"{prefix}trainer",
                                "--key-id", key_id(read_key(key)).hex(),
                                "--checkpoint-dir", str(work / "ckpt"), "--checkpoint-seconds", "1",
                                "--checkpoint-records", str(max(2000, per_pass * args.passes // 8)),
                                "--report-seconds", "0.05", "--metrics-port", str(port), "--batch-messages", "1",
                                "--curve-records", "1024"],
                        out_dir / "trainer.log", env)
        scorer = spawn(stack, ["scorer", "--mode", "throughput", "--group", f"{prefix}scorer",
                               "--model-wait", "120"], out_dir / "scorer.log", env)
        watcher = ModelWatcher(kafka)
        stack.callback(watcher.close)

        n_train = len(train_labels) * args.passes
        say(f"producing {n_train:,} training records ({args.passes} pass(es) over adult.data) ...")
        t0 = time.monotonic()
        for _ in range(args.passes):
            subprocess.run([sys.executable, "-m", "producer", "--input", str(DATA / "adult.data"),
                            "--schema", str(schema), "--key", str(key), "--no-progress", "--frame-records", "1024"],
                           env=env, check=True, cwd=REPO, stdout=(out_dir / "producer.log").open("a"),
                           stderr=subprocess.STDOUT)
        t_prod = time.monotonic() - t0
        figures["producer_records_per_s"] = n_train / t_prod
        say(f"producer: {n_train:,} records in {t_prod:.1f}s ({n_train / t_prod:,.0f} records/s, "
            "including process start-up)")

        snapshots = []
        model = None
        deadline = time.monotonic() + args.wait
        last_say = 0.0
        while time.monotonic() < deadline:
            for proc, name in ((trainer, "trainer"), (scorer, "scorer")):
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}; see {out_dir / (name + '.log')}")
            got = watcher.poll(0.25)
            if got is not None:
                snapshots.append(got)
            model = watcher.latest
            if time.monotonic() - last_say > 3:
                say(f"trainer: model v{model.version if model else 0}, "
                    f"{model.records_seen if model else 0:,}/{n_train:,} records learned")
                last_say = time.monotonic()
            if model is not None and model.records_seen >= n_train:
                break
        else:
            raise RuntimeError(f"no model with all {n_train:,} records within {args.wait:.0f}s")
        t_train = time.monotonic() - t0
        figures["trainer_records_per_s"] = n_train / t_train
        figures["model_version"] = model.version
        say(f"trainer: model v{model.version} has seen {model.records_seen:,} records; "
            f"{n_train / t_train:,.0f} records/s from first frame sent to model published")

        say("scoring adult.test through the scorer ...")
        _, test_labels = bl.read_adult(DATA / "adult.test")
        scored = out_dir / "adult.test.scored.csv"
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-m", "hashbridge.cli", "score", "--input", str(DATA / "adult.test"),
                        "--out", str(scored), "--schema", str(schema), "--key", str(key), "--skip-rows", "1",
                        "--timeout", "60"], env=env, check=False, cwd=REPO,
                       stdout=(out_dir / "score.log").open("w"), stderr=subprocess.STDOUT)
        t_score = time.monotonic() - t0
        test, versions = evaluate(scored, test_labels)
        figures["scorer_records_per_s"] = test["records"] / t_score
        figures["test"] = test
        figures["test_model_versions"] = sorted(versions)
        say(f"scored {test['records']:,} of {len(test_labels):,} test records in {t_score:.1f}s "
            f"({test['records'] / t_score:,.0f} records/s, round trip incl. start-up), "
            f"model versions {sorted(versions)}")

        say("fitting the exact one-hot logistic regression (Newton/IRLS) ...")
        edges_file = schema.parent / "adult.edges.json"
        edges = json.loads(edges_file.read_text()) if edges_file.exists() else None
        figures["baseline"] = bl.baseline(DATA / "adult.data", DATA / "adult.test", edges)
        curve = read_curve(work / "ckpt" / CURVE_FILE)
        figures["progressive_final"] = curve[-1] if curve else None
        figures["progressive_curve"] = curve
        test_curve = test_learning_curve(snapshots, schema, key, DATA / "adult.test")
        figures["learning_curve"] = test_curve
        png = learning_curve(curve, test_curve, out_dir / "learning_curve.png", figures["baseline"],
                             title=f"hashbridge on UCI Adult: 2^{BITS} keyed BLAKE2b, AdaGrad, "
                                   f"{args.passes} pass(es)")
        figures["seconds"] = time.monotonic() - t_start
        (out_dir / "demo.json").write_text(json.dumps(figures, indent=1) + "\n")
        say("stopping trainer, scorer" + (" and the local broker" if lease.source == "local" else "") + " ...")
    b, t = figures["baseline"], figures["test"]
    print()
    print(f"  producer         {figures['producer_records_per_s']:>10,.0f} records/s")
    print(f"  trainer          {figures['trainer_records_per_s']:>10,.0f} records/s")
    print(f"  scorer           {figures['scorer_records_per_s']:>10,.0f} records/s (client round trip)")
    print(f"  hashbridge test  AUC {t['auc']:.4f}  logloss {t['logloss']:.4f}  (model v{figures['model_version']}, "
          f"2^{BITS} keyed BLAKE2b, {args.passes} pass(es))")
    print(f"  exact one-hot LR AUC {b['auc']:.4f}  logloss {b['logloss']:.4f}  ({b['features']} features)")
    print(f"  AUC gap          {b['auc'] - t['auc']:+.4f}")
    print(f"  learning curve   {png}")
    print(f"  figures          {out_dir / 'demo.json'}")
    print(f"  total            {figures['seconds']:.0f}s")
    return figures


def test_learning_curve(snapshots: list, schema_path: Path, key_path: Path, test_path: Path
                        ) -> list[dict[str, float]]:
    """Each model the trainer published, applied to adult.test here on the owner's side (the owner
    holds the key, so it can hash the test set itself): logloss and AUC against records seen."""
    from producer.hashing import make_hasher
    from producer.keys import read_key
    from producer.schema import load_schema
    from scorer.scoring import predict_numpy

    rows, labels = bl.read_adult(test_path)
    hasher = make_hasher(load_schema(schema_path), read_key(key_path))
    enc = hasher.records([dict(zip(bl.COLUMNS, r)) for r in rows.values()], with_label=False)
    y = np.array(list(labels.values()), float)[enc.kept]
    points = []
    for snap in snapshots:
        p = predict_numpy(snap, enc.offsets, enc.indices, enc.values)
        points.append({"records": snap.records_seen, "version": snap.version,
                       "logloss": bl.logloss(y, p), "auc": bl.auc(y, p)})
    return points


def _keygen(path: Path) -> None:
    from producer import keygen

    if keygen.main(["--out", str(path)]) != 0:
        raise RuntimeError("keygen failed")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hashbridge demo", description=__doc__.splitlines()[0])
    p.add_argument("--passes", type=int, default=1, help="passes over adult.data (default 1)")
    p.add_argument("--out", default="demo-out", help="directory for the PNG, JSON and logs (default demo-out)")
    p.add_argument("--wait", type=float, default=90.0, help="seconds to wait for the trained model")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        run_demo(args)
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"hashbridge demo: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
