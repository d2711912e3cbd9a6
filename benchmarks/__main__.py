"""``python -m benchmarks [part ...] [--quick]``: run the parts (all by default), then the report.

BLAS threads are pinned to one before anything imports numpy, so no contender gets hidden extra
cores. Each part runs in its own child process with a time limit: a part that hangs (a broker
gone away) or is not written yet is recorded in ``results/harness.json`` and the rest still run.
"""
from __future__ import annotations

import os

from shared.startup import BLAS_THREAD_VARS

for _var in BLAS_THREAD_VARS:
    os.environ[_var] = "1"

import argparse  # noqa: E402 - after the pinning on purpose
import contextlib  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

# part -> (module, time limit in seconds for full / quick runs); others write producer/trainer/scorer
PARTS: dict[str, tuple[str, float, float]] = {
    "headtohead": ("benchmarks.headtohead", 420, 240),  # drops its last repetition when short of time
    "accuracy": ("benchmarks.accuracy", 240, 180),
    "pipeline": ("benchmarks.pipeline", 300, 150),  # CSV -> producer -> Kafka -> trainer (+ VW), 5 repetitions
    "producer": ("benchmarks.producer", 200, 120),
    "trainer": ("benchmarks.trainer", 300, 150),
    "scorer": ("benchmarks.scorer", 300, 120),  # 15 s latency windows at 1,000/s; took 199-207 s
    "deltas": ("benchmarks.deltas", 300, 150),  # scale-out study: run by name only (outside the budget)
}
DEFAULT_PARTS = ("headtohead", "accuracy", "pipeline", "producer", "trainer", "scorer")
KAFKA_PARTS = {"pipeline", "producer", "trainer", "scorer", "deltas"}
BUDGET_SECONDS = 19 * 60  # the whole ``make bench`` must finish in 20 minutes on 2 cores


def _end_group(proc: subprocess.Popen) -> None:
    """SIGTERM the part's process group (clean stops), then SIGKILL what is left after 10 s."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.communicate(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _cpu_ticks() -> tuple[int, int]:
    """(steal, total) CPU ticks of the host so far, from ``/proc/stat`` ((0, 0) where unreadable).
    Steal is time this VM's vCPUs were ready but the hypervisor ran something else."""
    try:
        fields = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def _run_part(name: str, quick: bool, limit: float) -> dict:
    """Run the part (:func:`_run_part_child`) and add the share of CPU time the hypervisor stole
    meanwhile: the figures of a part that ran while other VMs took the host's cores say so."""
    s0, t0 = _cpu_ticks()
    out = _run_part_child(name, quick, limit)
    s1, t1 = _cpu_ticks()
    out["host_steal_share"] = (s1 - s0) / (t1 - t0) if t1 > t0 else None
    return out


def _run_part_child(name: str, quick: bool, limit: float) -> dict:
    """Import the part lazily in a child and call ``run(quick)``; never raises.

    The child's stdout streams through (progress); stderr is kept for the failure reason.
    """
    from benchmarks.common import DEADLINE_ENV

    module = PARTS[name][0]
    code = (f"import importlib, sys\n"
            f"try:\n    m = importlib.import_module({module!r})\n"
            f"except Exception as e:\n"
            f"    print('not available: %s: %s' % (type(e).__name__, e), file=sys.stderr); sys.exit(3)\n"
            f"r = m.run(quick={quick!r})\n"
            # producer and trainer return their figures and write only from their own main()
            f"if isinstance(r, dict) and set(r) == {{'figures', 'notes'}}:\n"
            f"    from benchmarks.common import RESULTS_DIR, write_result\n"
            f"    p = RESULTS_DIR / {name + '.json'!r}\n"
            f"    if not p.exists() or p.stat().st_mtime < {time.time()!r}:\n"
            f"        write_result({name!r}, r['figures'], r['notes'])\n")
    t0 = time.perf_counter()
    # its own process group, so a timeout also ends the workers and brokers the part started
    env = {**os.environ, DEADLINE_ENV: str(time.time() + limit)}  # parts may pace themselves by it
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=env)
    try:
        _, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        _end_group(proc)
        return {"status": f"failed: timed out after {limit:.0f} s", "seconds": time.perf_counter() - t0}
    seconds = time.perf_counter() - t0
    tail = (err or "").strip().splitlines()
    if proc.returncode == 3 and tail and tail[-1].startswith("not available"):
        return {"status": tail[-1], "seconds": seconds}
    if proc.returncode != 0:
        for line in tail[-15:]:
            print(f"  [{name}] {line}", flush=True)
        return {"status": f"failed: exit {proc.returncode}: {tail[-1] if tail else ''}", "seconds": seconds}
    return {"status": "ok", "seconds": seconds}


@contextlib.contextmanager
def _broker(needed: set[str]):
    """One broker for every Kafka part, named to the children by ``HASHBRIDGE_BOOTSTRAP``.

    Without it each part guessed its own default address (localhost:9092 or :19092) and hung until
    its time limit when nothing answered there. An address already in the environment is kept
    as it is; else a local broker of the run's own is started with the full JIT, warmed up, and
    stopped after (``benchmarks/brokerjit.py`` says why).
    """
    from hashbridge.localkafka import BOOTSTRAP_ENV

    if not needed:
        yield ""
        return
    if os.environ.get(BOOTSTRAP_ENV, "").strip():
        yield f"the broker at ${BOOTSTRAP_ENV} ({os.environ[BOOTSTRAP_ENV]}), as it was"
        return
    data_dir = tempfile.mkdtemp(prefix="hb-bench-kafka-")
    try:
        from benchmarks import brokerjit
        from hashbridge.localkafka import free_port, resolve_bootstrap

        brokerjit.use_full_jit()  # production-like: C2, warmed below (see benchmarks/brokerjit.py)
        # Kafka's own default (3 s), not the 0 the test broker uses for speed: a new group's first
        # generation then holds every member that joins within 3 s, so a 2-worker trainer starts
        # with both workers assigned instead of one learning alone until the next rebalance.
        # Its own data dir and port: never a C1 broker someone left running in the default dir.
        lease = resolve_bootstrap(data_dir=data_dir, port=free_port(),
                                  extra_config={"group.initial.rebalance.delay.ms": "3000"})
        print(f"== Kafka at {lease.bootstrap} ({lease.source}, full JIT); warming it up", flush=True)
        warm = brokerjit.warm_up(lease.bootstrap)
        print(f"== broker warm-up: {warm['sent']:,} messages in {warm['seconds']:.0f} s", flush=True)
    except Exception as exc:  # noqa: BLE001 - the Kafka parts then fail and say so; the rest run
        print(f"== no Kafka broker ({type(exc).__name__}: {exc}); {', '.join(sorted(needed))} will fail",
              flush=True)
        shutil.rmtree(data_dir, ignore_errors=True)
        yield f"no broker: {type(exc).__name__}: {exc}"
        return
    os.environ[BOOTSTRAP_ENV] = lease.bootstrap
    try:
        yield (f"a local Kafka broker started for the run, full JIT ({brokerjit.FULL_JIT}), warmed up for "
               f"{warm['seconds']:.0f} s ({warm['sent']:,} messages) before the first part")
    finally:
        os.environ.pop(BOOTSTRAP_ENV, None)
        lease.close()
        shutil.rmtree(data_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    ap.add_argument("parts", nargs="*", help=f"parts to run (default: {', '.join(DEFAULT_PARTS)}); also: "
                    f"{', '.join(sorted(set(PARTS) - set(DEFAULT_PARTS)))}, report")
    ap.add_argument("--quick", action="store_true", help="small data and fewer repetitions (development)")
    args = ap.parse_args(argv)
    unknown = sorted(set(args.parts) - set(PARTS) - {"report"})
    if unknown:
        ap.error(f"unknown part(s): {', '.join(unknown)}")
    parts = [p for p in args.parts if p != "report"] if args.parts else list(DEFAULT_PARTS)

    import json

    from benchmarks.common import RESULTS_DIR, write_result

    harness_path = RESULTS_DIR / "harness.json"
    status = json.loads(harness_path.read_text())["figures"].get("parts", {}) if harness_path.exists() else {}
    if parts:
        from benchmarks.compare import keep_previous

        keep_previous(["harness", *parts])
    t0 = time.perf_counter()
    with _broker(set(parts) & KAFKA_PARTS) as broker:
        for name in parts:
            left = BUDGET_SECONDS - (time.perf_counter() - t0)
            limit = min(PARTS[name][2 if args.quick else 1], max(left, 30.0))
            print(f"== {name}{' (quick)' if args.quick else ''}, limit {limit:.0f} s", flush=True)
            status[name] = {**_run_part(name, args.quick, limit), "quick": args.quick}
            print(f"== {name}: {status[name]['status']} in {status[name]['seconds']:.0f} s", flush=True)
    if parts:
        notes = ["BLAS threads pinned to 1 (OMP/OPENBLAS/MKL/NUMEXPR_NUM_THREADS) for every part."]
        if broker:
            notes.append(f"Kafka parts ran through {broker}.")
        write_result("harness", {"parts": status, "last_run_seconds": time.perf_counter() - t0,
                                 "broker": broker}, notes)
    from benchmarks import report

    print(f"== report: {report.build()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
