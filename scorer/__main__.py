"""``hashbridge scorer`` / ``python -m scorer``: parse flags, wire signals, run the loop."""
from __future__ import annotations

import argparse
import gc
import logging
import sys

from prometheus_client import start_http_server

from scorer.metrics import ScorerMetrics
from scorer.service import ScorerService
from scorer.settings import MODE_DEFAULTS, ScorerSettings
from shared.errors import HashbridgeError
from shared.allocator import reuse_large_buffers
from shared.logs import setup_logging
from shared.signals import stop_on
from shared.startup import skip_numba_blas_probe

log = logging.getLogger("scorer")


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="hashbridge scorer", description=(
        "Answer score requests on <prefix>score with predictions on <prefix>predictions, using the "
        "newest complete model on <prefix>models. Flags fall back to environment variables."))
    p.add_argument("--bootstrap", help="Kafka bootstrap servers (env HASHBRIDGE_BOOTSTRAP)")
    p.add_argument("--topic-prefix", "--prefix", dest="prefix", help="topic name prefix (env HASHBRIDGE_TOPIC_PREFIX, default hb.)")
    p.add_argument("--group", help="consumer group (env HASHBRIDGE_SCORER_GROUP, default hb-scorer)")
    p.add_argument("--mode", choices=sorted(MODE_DEFAULTS),
                   help="latency: small batches, no linger; throughput: large batches "
                        "(env HASHBRIDGE_SCORER_MODE, default latency)")
    p.add_argument("--model-wait", type=float,
                   help="seconds after start-up to wait for a first model before requests get "
                        "'no_model' error replies (env HASHBRIDGE_SCORER_MODEL_WAIT, default 30)")
    p.add_argument("--serve-threads", type=int,
                   help="threads that score large frames (env HASHBRIDGE_SCORER_SERVE_THREADS; default "
                        "1 in latency mode, 2 in throughput mode)")
    p.add_argument("--partitions", type=int, help="partitions when creating missing topics (default 4)")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port "
                                                    "(env HASHBRIDGE_SCORER_METRICS_PORT)")
    p.add_argument("--session-timeout-ms", type=int, help="consumer group session timeout (default 10000)")
    p.add_argument("--max-records", type=int, help="stop after answering this many records")
    p.add_argument("--timeout", type=float, help="stop after this many seconds")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    setup_logging()
    reuse_large_buffers()  # fetch buffers reused, not re-faulted (shared/allocator.py)
    skip_numba_blas_probe()  # before the scoring kernels load: ~0.2 s less start-up with SciPy
    try:
        settings = ScorerSettings.from_env(
            bootstrap=args.bootstrap, prefix=args.prefix, group=args.group, mode=args.mode,
            model_wait=args.model_wait, partitions=args.partitions, metrics_port=args.metrics_port,
            session_timeout_ms=args.session_timeout_ms, serve_threads=args.serve_threads)
    except ValueError as exc:
        log.error("bad settings: %s", exc)
        return 2
    metrics = ScorerMetrics()
    if settings.metrics_port:
        start_http_server(settings.metrics_port, registry=metrics.registry)
    service = ScorerService(settings, metrics)
    log.info("scorer starting: mode=%s group=%s topics=%s*", settings.mode, settings.group,
             settings.kafka.topics.prefix)
    try:
        with service, stop_on(service.stop):
            # start-up objects (numba's compiler, the librdkafka wrappers, the model) live for the
            # whole run: out of the collector's sight, a full collection no longer walks them
            # (one took 50-130 ms, a request-latency tail)
            gc.collect()
            gc.freeze()
            n = service.run(max_records=args.max_records, timeout=args.timeout)
    except HashbridgeError as exc:
        log.error("scorer failed (%s): %s", exc.reason, exc)
        return 1
    log.info("scorer stopped after %d records", n)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
