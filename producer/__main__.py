"""``hashbridge produce``: hash a file, stdin or a raw topic into training frames and publish them.

Parse flags, read the key and schema, wire SIGTERM/SIGINT to ``stop()`` (which lets the loop
flush what it accepted), run, and choose the exit code: 0 all delivered, 1 delivery errors or a
bad run, 2 bad configuration.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import uuid
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

from shared.allocator import pretouch, reuse_large_buffers
from shared.errors import ConfigError, HashbridgeError
from shared.hashspec import Algorithm
from shared.logs import setup_logging
from shared.signals import stop_on
from shared.settings import KafkaSettings
from shared.startup import quiet_imports, skip_numba_blas_probe

from producer.keys import read_key
from producer.schema import Schema, load_schema
from producer.settings import DEFAULT_FRAME_RECORDS, ProducerSettings
from producer.sources import DEFAULT_READAHEAD_BYTES, CsvSource, open_source

if TYPE_CHECKING:
    from producer.service import RunReport

# numba (the hash kernels) and librdkafka are imported in run(), after the CSV reader has started:
# their ~0.4 s of imports then overlap the first blocks' parsing on the reader thread

log = logging.getLogger("producer")
# a watching producer's working heap on the benchmark's first file grew by ~165 MiB; touched at
# start and kept (shared/allocator.py), its CPU per file fell by ~0.15 s (docs/producer.md)
WATCH_PRETOUCH_MIB = 240


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hashbridge produce", description=(
        "Hash records with the owner's secret key and publish training frames. Only index lists and "
        "0/1 labels leave this machine; the key, ids and raw values stay here."))
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", help="CSV or Parquet file (format from the suffix, or --format)")
    src.add_argument("--jsonl", help="JSON lines file, or - for stdin")
    src.add_argument("--relay-topic", help="relay mode: raw JSON records on this topic of --source-bootstrap")
    src.add_argument("--watch", metavar="DIR", help="stay up and publish every CSV/Parquet/JSON-lines file renamed "
                                                    "into DIR, then move it to DIR/done (or DIR/failed)")
    p.add_argument("--format", choices=["csv", "parquet", "jsonl"], help="input format (default: from suffix)")
    p.add_argument("--schema", required=True, help="schema TOML file")
    p.add_argument("--key", help="key file from 'hashbridge keygen' (not needed in mmh3 insecure mode)")
    p.add_argument("--bootstrap", help="destination cluster (default $HASHBRIDGE_BOOTSTRAP)")
    p.add_argument("--topic-prefix", help="topic prefix (default $HASHBRIDGE_TOPIC_PREFIX or hb.)")
    p.add_argument("--source-bootstrap", help="relay mode: the owner's own cluster (default: --bootstrap)")
    p.add_argument("--relay-group", default="hb-relay", help="relay mode: consumer group on the source")
    p.add_argument("--idle-exit", type=float, help="relay and watch modes: exit after this many seconds without input")
    p.add_argument("--frame-records", type=int, default=DEFAULT_FRAME_RECORDS, help="records per frame")
    p.add_argument("--partitioning", choices=["roundrobin", "random", "key"], default="roundrobin",
                   help="roundrobin over partitions (default), random, or key: one random key per run")
    p.add_argument("--partitions", type=int, default=4, help="partitions of topics this command creates")
    p.add_argument("--no-create-topics", action="store_true", help="do not create missing pipeline topics")
    p.add_argument("--strict", action="store_true", help="stop at the first bad record")
    p.add_argument("--skip-rows", type=int, default=0, help="lines to skip before the data (or header)")
    p.add_argument("--threads", action="store_true",
                   help="let pyarrow parse CSV on several threads (files or parts the plain reader does not take)")
    p.add_argument("--readahead-mib", type=int, default=DEFAULT_READAHEAD_BYTES >> 20,
                   help="CSV parsed ahead of the hasher, MiB (default %(default)s; it holds up to ~1.7x that "
                        "in memory, and lets parsing overlap the start-up)")
    p.add_argument("--pretouch-mib", type=int,
                   help=f"watch mode: heap faulted in at start and kept for the batches, MiB (default "
                        f"{WATCH_PRETOUCH_MIB}; 0 = off), so the first file does not pay page faults")
    p.add_argument("--compression", choices=["lz4", "zstd", "gzip", "snappy", "none"], default="lz4",
                   help="frame compression (default lz4; 'none' costs less CPU on a local or fast link)")
    p.add_argument("--no-end-markers", action="store_true",
                   help="after each input file, do not send the end-of-input marker (an empty frame "
                        "to every partition that lets trainers checkpoint at once)")
    p.add_argument("--max-records", type=int, help="stop after this many input records")
    p.add_argument("--metrics-port", type=int, default=int(os.environ.get("HASHBRIDGE_PRODUCER_METRICS_PORT", 0)),
                   help="serve Prometheus metrics here (default $HASHBRIDGE_PRODUCER_METRICS_PORT, 0 = off)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return p


def prepare_schema(args: argparse.Namespace) -> Schema:
    """Load the schema; learn missing quantile edges from the input itself (saved by the schema)."""
    schema = load_schema(args.schema)
    if schema.algorithm is Algorithm.MMH3_PUBLIC:
        from producer.hashing import INSECURE_WARNING

        print(f"\n*** {INSECURE_WARNING} ***\n", file=sys.stderr)
    if schema.unfitted:
        from producer.edges import fit_edges

        path = args.input or (args.jsonl if args.jsonl and args.jsonl != "-" else None)
        if path is None:
            raise ConfigError(f"numeric columns {list(schema.unfitted)} have no edges yet; run "
                              "'hashbridge schema fit' on a sample first")
        log.warning("learning quantile edges of %d numeric columns from %s (saved next to the schema)",
                    len(schema.unfitted), os.path.basename(path))
        schema = fit_edges(schema, path, fmt=args.format or ("jsonl" if args.jsonl else None),
                           skip_rows=args.skip_rows)
    return schema


def _progress(stack: ExitStack, total: int) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    progress = stack.enter_context(Progress(
        TextColumn("producing"), BarColumn(), DownloadColumn(), TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(), console=Console(stderr=True), transient=False))
    task = progress.add_task("produce", total=total or None, rate="")

    def update(chunk: Any, report: RunReport) -> None:
        import time as _t
        elapsed = _t.monotonic() - update.t0  # type: ignore[attr-defined]
        rate = f"{report.records_read:,} records, {report.records_read / max(elapsed, 1e-9):,.0f}/s"
        progress.update(task, completed=chunk.bytes_read, rate=rate)

    import time as _t
    update.t0 = _t.monotonic()  # type: ignore[attr-defined]
    return update


def print_report(report: RunReport) -> None:
    print(f"read {report.records_read:,} records; published {report.records_acked:,} in {report.frames:,} frames "
          f"({report.records_per_second:,.0f} records/s); skipped {report.bad_count:,} bad rows; "
          f"{report.delivery_errors} delivery errors", file=sys.stderr)
    for reason, n in sorted(report.bad_by_reason.items()):
        print(f"  {n:,} x {reason}", file=sys.stderr)
    for line, column, reason in report.bad_rows[:50]:
        print(f"  line {line}: {reason}" + (f" ({column})" if column else ""), file=sys.stderr)
    if len(report.bad_rows) > 50:
        print(f"  ... {report.bad_count - 50:,} more", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    schema = prepare_schema(args)
    key = read_key(args.key) if args.key else None
    if args.watch and args.max_records is not None:
        raise ConfigError("--max-records does not apply to --watch")
    with ExitStack() as stack:
        source = None
        if not (args.relay_topic or args.watch):
            # parse ahead while the hasher's kernels load (~0.7 s of numba on this thread), with
            # pyarrow: the plain reader needs numba first; with rare-value suppression the file is
            # read once first, below, so the reader waits (and may be the plain one)
            early = schema.rare_k <= 1
            source = open_source(args.input or args.jsonl, schema, schema.input_columns, fmt=args.format,
                                 skip_rows=args.skip_rows, use_threads=args.threads,
                                 readahead_bytes=max(1, args.readahead_mib) << 20, plain=not early,
                                 raw_batches=True)
            if isinstance(source, CsvSource) and early:
                source.start()
                stack.callback(source.close)
        with quiet_imports():  # as hashbridge.cli imports this module: no collector walks
            skip_numba_blas_probe()
            from producer.edges import prime_rare
            from producer.hashing import make_hasher
            from producer.metrics import ProducerMetrics
            from producer.publisher import FramePublisher
            from producer.service import ProducerService
            from shared.clients import ensure_pipeline_topics, make_consumer

        hasher = make_hasher(schema, key)
        prime_path = args.input or (args.jsonl if args.jsonl and args.jsonl != "-" else None)
        if hasher.rare.enabled and prime_path and not (args.relay_topic or args.watch):
            prime_rare(hasher, prime_path, fmt=args.format or ("jsonl" if args.jsonl else None),
                       skip_rows=args.skip_rows)
        kafka = KafkaSettings.from_env(bootstrap=args.bootstrap, prefix=args.topic_prefix)
        settings = ProducerSettings(kafka=kafka, frame_records=args.frame_records, partitioning=args.partitioning,
                                    strict=args.strict, metrics_port=args.metrics_port,
                                    compression=args.compression, progress=not args.no_progress,
                                    end_markers=not args.no_end_markers)
        log.info("producing with spec %s", hasher.spec)
        if not args.no_create_topics:
            ensure_pipeline_topics(kafka, partitions=args.partitions)
        metrics = ProducerMetrics()
        metrics.serve(settings.metrics_port)
        publisher = FramePublisher(settings.kafka_config(), kafka.topics.train, metrics, settings.partitioning)
        if args.watch:
            return _watch(args, schema, key, hasher, settings, publisher, metrics)
        if source is None:
            from producer.relay import RelayService

            source_kafka = KafkaSettings.from_env(bootstrap=args.source_bootstrap or kafka.bootstrap)
            consumer = make_consumer(source_kafka, args.relay_group, **{"client.id": f"relay-{uuid.uuid4().hex[:6]}"})
            stack.callback(consumer.close)
            service: Any = RelayService(settings, hasher, consumer, args.relay_topic, publisher,
                                                    metrics)
        else:
            progress = None
            if settings.progress and getattr(source, "size", 0) and sys.stderr.isatty():
                progress = _progress(stack, source.size)
            service = ProducerService(settings, hasher, source, publisher, metrics, progress)
        stack.enter_context(stop_on(service.stop))
        if args.relay_topic:
            report = service.run(max_records=args.max_records, idle_exit=args.idle_exit)  # type: ignore[call-arg]
        else:
            report = service.run(max_records=args.max_records)
    print_report(report)
    return 1 if report.delivery_errors else 0


def _watch(args: argparse.Namespace, schema: Schema, key: bytes | None, hasher: Any, settings: ProducerSettings,
           publisher: Any, metrics: Any) -> int:
    """The spool loop (producer/spool.py): one hasher, publisher and broker connection for all files."""
    from pathlib import Path

    from producer.edges import prime_rare
    from producer.hashing import make_hasher
    from producer.service import ProducerService
    from producer.spool import SpoolService, warm_up

    warm_up(schema, lambda: make_hasher(schema, key))
    pretouch((WATCH_PRETOUCH_MIB if args.pretouch_mib is None else args.pretouch_mib) << 20)

    def publish_file(path: Path) -> RunReport:
        if hasher.rare.enabled:
            prime_rare(hasher, str(path), fmt=args.format, skip_rows=args.skip_rows)
        source = open_source(str(path), schema, schema.input_columns, fmt=args.format, skip_rows=args.skip_rows,
                             use_threads=args.threads, readahead_bytes=max(1, args.readahead_mib) << 20,
                             raw_batches=True)  # the hasher probes uniform blocks where they lie
        service = ProducerService(settings, hasher, source, publisher, metrics)
        spool.on_stop = service.stop
        try:
            return service.run()
        finally:
            spool.on_stop = None

    spool = SpoolService(Path(args.watch), publish_file, metrics)
    with stop_on(spool.stop):
        report = spool.run(idle_exit=args.idle_exit)
    print(f"watched {args.watch}: {report.files_done} files published ({report.records_acked:,} records), "
          f"{report.files_failed} failed", file=sys.stderr)
    return 1 if report.files_failed else 0


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = build_parser().parse_args(argv)
    reuse_large_buffers(one_arena=True)  # batch buffers reused, not re-faulted (shared/allocator.py)
    try:
        return run(args)
    except ConfigError as exc:
        print(f"hashbridge produce: {exc}", file=sys.stderr)
        return 2
    except HashbridgeError as exc:
        print(f"hashbridge produce: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
