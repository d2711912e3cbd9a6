"""``python -m benchmarks [part ...] [--quick]``: run the parts (all by default), then the report.

BLAS threads are pinned to one before anything imports numpy, so no contender gets hidden extra
cores. Each part runs in its own child process with a time limit: a part that hangs (a broker
gone away) or is not written yet is recorded in ``results/harness.json`` and the rest still run.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402 - after the pinning on purpose
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

# part -> (module, time limit in seconds for full / quick runs); others write producer/trainer/scorer
PARTS: dict[str, tuple[str, float, float]] = {
    "headtohead": ("benchmarks.headtohead", 600, 240),
    "accuracy": ("benchmarks.accuracy", 420, 180),
    "producer": ("benchmarks.producer", 240, 120),
    "trainer": ("benchmarks.trainer", 300, 150),
    "scorer": ("benchmarks.scorer", 240, 120),
}


def _run_part(name: str, quick: bool) -> dict:
    """Import the part lazily in a child and call ``run(quick)``; never raises."""
    module, full_limit, quick_limit = PARTS[name]
    code = (f"import importlib, sys\n"
            f"try:\n    m = importlib.import_module({module!r})\n"
            f"except Exception as e:\n    print('not available: %s: %s' % (type(e).__name__, e)); sys.exit(3)\n"
            f"m.run(quick={quick!r})\n")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-c", code], timeout=quick_limit if quick else full_limit,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except subprocess.TimeoutExpired:
        return {"status": "failed: timed out", "seconds": time.perf_counter() - t0}
    seconds = time.perf_counter() - t0
    tail = proc.stdout.strip().splitlines()
    for line in tail[-40:]:
        print(f"  [{name}] {line}")
    if proc.returncode == 3 and tail and tail[-1].startswith("not available"):
        return {"status": tail[-1], "seconds": seconds}
    if proc.returncode != 0:
        return {"status": f"failed: exit {proc.returncode}: {tail[-1] if tail else ''}", "seconds": seconds}
    return {"status": "ok", "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    ap.add_argument("parts", nargs="*", help=f"parts to run (default: all): {', '.join(PARTS)}, report")
    ap.add_argument("--quick", action="store_true", help="small data and fewer repetitions (development)")
    args = ap.parse_args(argv)
    unknown = sorted(set(args.parts) - set(PARTS) - {"report"})
    if unknown:
        ap.error(f"unknown part(s): {', '.join(unknown)}")
    parts = [p for p in args.parts if p != "report"] if args.parts else list(PARTS)

    import json

    from benchmarks.common import RESULTS_DIR, write_result

    harness_path = RESULTS_DIR / "harness.json"
    status = json.loads(harness_path.read_text())["figures"].get("parts", {}) if harness_path.exists() else {}
    t0 = time.perf_counter()
    for name in parts:
        print(f"== {name}{' (quick)' if args.quick else ''}", flush=True)
        status[name] = {**_run_part(name, args.quick), "quick": args.quick}
        print(f"== {name}: {status[name]['status']} in {status[name]['seconds']:.0f} s", flush=True)
    if parts:
        write_result("harness", {"parts": status, "last_run_seconds": time.perf_counter() - t0},
                     ["BLAS threads pinned to 1 (OMP/OPENBLAS/MKL/NUMEXPR_NUM_THREADS) for every part."])
    from benchmarks import report

    print(f"== report: {report.build()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
