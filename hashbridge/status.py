"""``hashbridge status``: the running pipeline at a glance, as rich tables or as JSON.

Gathering lives in :mod:`hashbridge.statusdata`; this module parses flags, renders, and
refreshes under ``--watch``. It only reads (admin offsets, an assign-only reader, /metrics pages).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from typing import Any, Sequence

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from hashbridge.statusdata import ScrapeStatus, Status, gather
from shared.settings import ENV_BOOTSTRAP, ENV_PREFIX, KafkaSettings
from shared.signals import stop_on

SERVICES = ("trainer", "scorer", "producer")
# what each service's /metrics page contributes to the summary: (row label, sample name, label filter)
SCRAPE_ROWS: dict[str, tuple[tuple[str, str, str | None], ...]] = {
    "trainer": (("records consumed", "hb_trainer_records_in_total", None),
                ("records in the model", "hb_trainer_records_learned", None),
                ("frames consumed", "hb_trainer_frames_in_total", None),
                ("logloss (overall)", "hb_trainer_progressive_logloss", "window=overall"),
                ("logloss (recent)", "hb_trainer_progressive_logloss", "window=recent"),
                ("AUC (overall)", "hb_trainer_progressive_auc", "window=overall"),
                ("AUC (recent)", "hb_trainer_progressive_auc", "window=recent"),
                ("model version", "hb_trainer_model_version", None),
                ("checkpoint age s", "hb_trainer_checkpoint_age_seconds", None),
                ("consumer lag", "hb_trainer_consumer_lag", "*"),
                ("rejected frames", "hb_trainer_rejected_frames_total", "*")),
    "scorer": (("records in", "hb_scorer_records_in_total", None),
               ("records answered", "hb_scorer_records_out_total", None),
               ("model version", "hb_scorer_model_version", None),
               ("model age s", "hb_scorer_model_age_seconds", None),
               ("consumer lag", "hb_scorer_lag", "*"),
               ("rejected", "hb_scorer_rejected_total", "*")),
    "producer": (("records sent", "hb_producer_records_total", "*"),
                 ("records acknowledged", "hb_producer_records_acked_total", "*"),
                 ("delivery errors", "hb_producer_delivery_errors_total", "*"),
                 ("hashing records/s", "hb_producer_hash_records_per_second", None),
                 ("bad records", "hb_producer_bad_records_total", "*")),
}


def parser() -> argparse.ArgumentParser:
    env = os.environ
    p = argparse.ArgumentParser(prog="hashbridge status", description=__doc__.splitlines()[0])
    p.add_argument("--bootstrap", default=None,
                   help=f"Kafka bootstrap servers (default ${ENV_BOOTSTRAP}, else localhost:9092)")
    p.add_argument("--topic-prefix", default=None,
                   help=f"topic name prefix (default ${ENV_PREFIX}, else 'hb.')")
    p.add_argument("--group", action="append", default=None,
                   help="only these consumer groups (repeatable; default: every group with offsets "
                        "on the pipeline's topics)")
    for name in SERVICES:
        var = f"HASHBRIDGE_{name.upper()}_METRICS_URL"
        p.add_argument(f"--{name}-metrics", metavar="URL", default=env.get(var),
                       help=f"the {name}'s /metrics URL to scrape (default ${var}, else not scraped)")
    p.add_argument("--watch", nargs="?", type=float, const=2.0, default=None, metavar="SECONDS",
                   help="refresh every SECONDS (default 2) until interrupted")
    p.add_argument("--json", action="store_true",
                   help="print the data as JSON (one object per line under --watch)")
    p.add_argument("--no-dlq", action="store_true", help="do not read the dead-letter topic")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per cluster request (default 10)")
    return p


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 120:
        return f"{seconds:.1f}s"
    if s < 7200:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _compact(pairs: Sequence[tuple[int, int]], limit: int = 8) -> str:
    shown = " ".join(f"{p}:{v:,}" for p, v in pairs[:limit])
    return shown + (f" (+{len(pairs) - limit} more)" if len(pairs) > limit else "")


def _scrape_value(s: ScrapeStatus, sample: str, labels: str | None) -> float | None:
    if labels is None:
        return s.values.get(sample)
    series = s.labelled.get(sample, {})
    if labels == "*":  # summed over its labels (partitions, reasons, topics)
        return sum(series.values()) if series else s.values.get(sample)
    return series.get(labels)


def _num(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if float(v).is_integer() and abs(v) >= 1 else f"{v:,.4g}"


def render(st: Status) -> Group:
    """The status as rich renderables, one table per concern."""
    head = Text.assemble(("hashbridge status  ", "bold"), f"{st.bootstrap}  prefix {st.prefix!r}  ",
                         (time.strftime("%H:%M:%S", time.localtime(st.taken_at)), "dim"))
    parts: list[Any] = [head]

    topics = Table(title="topics", title_justify="left")
    for col, just in (("topic", "left"), ("partitions", "right"), ("messages", "right"),
                      ("end offsets by partition", "left")):
        topics.add_column(col, justify=just)  # type: ignore[arg-type]
    for t in st.topics:
        if not t.exists:
            topics.add_row(t.name, "-", "-", Text("missing", style="yellow"))
            continue
        topics.add_row(t.name, str(len(t.partitions)), f"{t.messages:,}",
                       _compact([(p.partition, p.high) for p in t.partitions]))
    parts.append(topics)

    groups = Table(title="consumer groups (lag = end offset - committed)", title_justify="left")
    for col in ("group", "state", "members", "topic", "lag", "lag by partition"):
        groups.add_column(col, justify="right" if col in {"members", "lag"} else "left")
    for g in st.groups:
        for topic in sorted({p.topic for p in g.partitions}):
            rows = [p for p in g.partitions if p.topic == topic]
            lag = sum(p.lag for p in rows)
            groups.add_row(g.group, g.state, str(g.members), topic,
                           Text(f"{lag:,}", style="green" if lag == 0 else "yellow"),
                           _compact([(p.partition, p.lag) for p in rows]))
    if not st.groups:
        groups.add_row("(none with offsets on these topics)", "", "", "", "", "")
    parts.append(groups)

    model = Table(title="newest model on the models topic", title_justify="left", show_header=False)
    model.add_column("what")
    model.add_column("value", justify="right")
    if st.model is None:
        model.add_row("model", "none published yet")
    else:
        m = st.model
        for k, v in (("version", str(m.version)), ("records seen", f"{m.records_seen:,}"),
                     ("age", _age(m.age_seconds)), ("bits", str(m.bits if m.bits is not None else "-")),
                     ("key id", m.key_id or "-"), ("live versions", ", ".join(map(str, m.live_versions)))):
            model.add_row(k, v)
    parts.append(model)

    for name, s in st.scrapes.items():
        tab = Table(title=f"{name} metrics ({s.url})", title_justify="left", show_header=False)
        tab.add_column("metric")
        tab.add_column("value", justify="right")
        if not s.ok:
            tab.add_row("scrape failed", Text(s.error or "", style="red"))
        for label, sample, labels in SCRAPE_ROWS.get(name, ()) if s.ok else ():
            tab.add_row(label, _num(_scrape_value(s, sample, labels)))
        parts.append(tab)

    dlq = Table(title="dead letters by reason", title_justify="left")
    dlq.add_column("reason")
    dlq.add_column("count", justify="right")
    if st.dlq is None:
        dlq.add_row("(topic missing or not read)", "")
    else:
        for reason, n in sorted(st.dlq.by_reason.items(), key=lambda kv: -kv[1]):
            dlq.add_row(reason, f"{n:,}")
        note = f"total (newest {st.dlq.scanned:,} read)" if st.dlq.truncated else "total"
        dlq.add_row(Text(note, style="bold"), Text(f"{st.dlq.total:,}", style="bold"))
    parts.append(dlq)

    if st.errors:
        parts.append(Panel("\n".join(st.errors), title="errors", border_style="red"))
    return Group(*parts)


def _take(a: argparse.Namespace, settings: KafkaSettings) -> Status:
    urls = {n: getattr(a, f"{n}_metrics") for n in SERVICES if getattr(a, f"{n}_metrics")}
    return gather(settings, metrics_urls=urls, groups=a.group, timeout=a.timeout, dlq=not a.no_dlq)


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(sys.argv[1:] if argv is None else argv)
    settings = KafkaSettings.from_env(a.bootstrap, a.topic_prefix)
    stop = threading.Event()
    console = Console()
    try:
        if a.watch is None:
            st = _take(a, settings)
            if a.json:
                print(st.to_json())
            else:
                console.print(render(st))
            return 0
        with stop_on(stop.set, (signal.SIGTERM,)):  # Ctrl-C stays a KeyboardInterrupt
            if a.json:
                while not stop.is_set():
                    print(json.dumps(_take(a, settings).to_dict(), sort_keys=True), flush=True)
                    stop.wait(a.watch)
                return 0
            with Live(console=console, auto_refresh=False, screen=False) as live:
                while not stop.is_set():
                    live.update(render(_take(a, settings)), refresh=True)
                    stop.wait(a.watch)
        return 0
    except KeyboardInterrupt:
        return 0
    except Exception as exc:  # noqa: BLE001 - an unreachable cluster: say so, exit non-zero
        print(f"hashbridge status: cannot read the cluster at {settings.bootstrap}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
