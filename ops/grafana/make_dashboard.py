"""Writes ``dashboards/hashbridge.json``: panels are listed here once, the JSON is derived.

Run ``python ops/grafana/make_dashboard.py`` after changing a panel; ``tests/unit/test_dashboard.py``
fails when the committed JSON and this script disagree, and when a query names a metric no
service exports.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards" / "hashbridge.json"
DATASOURCE = {"type": "prometheus", "uid": "hb-prometheus"}  # provisioning/datasources/prometheus.yml
UID = "hashbridge-pipeline"
SCHEMA_VERSION = 39
R = "[$__rate_interval]"

# (row title, [(panel title, kind, unit, [(expr, legend)], description)])
PANELS: list[tuple[str, list[tuple[str, str, str, list[tuple[str, str]], str]]]] = [
    ("Throughput", [
        ("Records per second", "timeseries", "rps", [
            (f"sum(rate(hb_producer_records_acked_total{R}))", "producer acked"),
            (f"sum(rate(hb_trainer_records_in_total{R}))", "trainer in"),
            (f"sum(rate(hb_scorer_records_in_total{R}))", "scorer in"),
            (f"sum(rate(hb_scorer_records_out_total{R}))", "scorer answered"),
        ], "Records through each service; the trainer should track the producer."),
        ("Frame bytes per second", "timeseries", "Bps", [
            (f"sum(rate(hb_producer_frame_bytes_total{R}))", "producer out"),
            (f"sum(rate(hb_trainer_bytes_in_total{R}))", "trainer in"),
            (f"sum(rate(hb_scorer_bytes_in_total{R}))", "scorer in"),
            (f"sum(rate(hb_scorer_bytes_out_total{R}))", "scorer out"),
        ], "Uncompressed frame bytes."),
        ("Frames per second", "timeseries", "short", [
            (f"sum(rate(hb_producer_frames_total{R}))", "producer out"),
            (f"sum(rate(hb_trainer_frames_in_total{R}))", "trainer in"),
            (f"sum(rate(hb_scorer_frames_in_total{R}))", "scorer in"),
            (f"sum(rate(hb_scorer_frames_out_total{R}))", "scorer out"),
        ], "Kafka messages; each frame carries many records."),
        ("Producer hashing rate", "timeseries", "rps", [
            ("hb_producer_hash_records_per_second", "records hashed/s"),
        ], "Keyed-hash throughput of the last batch."),
    ]),
    ("Lag", [
        ("Trainer consumer lag by partition", "timeseries", "short", [
            ("sum by (partition) (hb_trainer_consumer_lag)", "partition {{partition}}"),
            ("sum(hb_trainer_consumer_lag)", "total"),
        ], "High watermark minus the next offset to learn; falls to zero when caught up."),
        ("Scorer consumer lag by partition", "timeseries", "short", [
            ("sum by (partition) (hb_scorer_lag)", "partition {{partition}}"),
        ], "Score requests waiting."),
    ]),
    ("Progressive validation", [
        ("Progressive logloss", "timeseries", "short", [
            ("hb_trainer_progressive_logloss", "{{window}}"),
        ], "Each record is predicted before it is learned."),
        ("Progressive AUC", "timeseries", "percentunit", [
            ("hb_trainer_progressive_auc", "{{window}}"),
        ], "Binned AUC, overall and over the recent window."),
        ("Calibration", "timeseries", "percentunit", [
            ("hb_trainer_mean_prediction", "mean prediction {{window}}"),
            ("hb_trainer_positive_rate", "positive rate {{window}}"),
        ], "The two lines should meet."),
        ("Records in the model", "stat", "short", [
            ("hb_trainer_records_learned", "records"),
        ], "Exactly-once count at the last checkpoint."),
    ]),
    ("Model", [
        ("Model age", "timeseries", "s", [
            ("hb_scorer_model_age_seconds", "scorer's model"),
            ("hb_trainer_checkpoint_age_seconds", "since trainer checkpoint"),
        ], "How stale the serving model is."),
        ("Model version", "stat", "none", [
            ("hb_trainer_model_version", "trainer"),
            ("hb_scorer_model_version", "scorer"),
        ], "Scorer lagging the trainer by more than one version means swaps are stuck."),
        ("Checkpoint duration p95", "timeseries", "s", [
            (f"histogram_quantile(0.95, sum by (le) (rate(hb_trainer_checkpoint_seconds_bucket{R})))", "p95"),
        ], "Workers pause for this long at each checkpoint."),
        ("Model swaps and worker restarts", "timeseries", "short", [
            (f"sum(increase(hb_scorer_model_swaps_total{R}))", "scorer swaps"),
            (f"sum by (cause) (increase(hb_trainer_worker_restarts_total{R}))", "restarts {{cause}}"),
            ("max(hb_trainer_worker_deaths_since_snapshot)", "worker deaths since the last snapshot"),
        ], "Deaths since the last snapshot rising toward --max-restarts (5): the trainer is about to stop."),
    ]),
    ("Latency", [
        ("Trainer batch and kernel latency", "timeseries", "s", [
            (f"histogram_quantile(0.5, sum by (le) (rate(hb_trainer_batch_seconds_bucket{R})))", "batch p50"),
            (f"histogram_quantile(0.99, sum by (le) (rate(hb_trainer_batch_seconds_bucket{R})))", "batch p99"),
            (f"histogram_quantile(0.99, sum by (le) (rate(hb_trainer_kernel_seconds_bucket{R})))", "kernel p99"),
        ], ""),
        ("Scorer latency", "timeseries", "s", [
            (f"histogram_quantile(0.99, sum by (le) (rate(hb_scorer_request_seconds_bucket{R})))", "request p99"),
            (f"histogram_quantile(0.99, sum by (le) (rate(hb_scorer_batch_seconds_bucket{R})))", "batch p99"),
            (f"histogram_quantile(0.99, sum by (le) (rate(hb_scorer_kernel_seconds_bucket{R})))", "kernel p99"),
        ], "Request: the request's timestamp to its reply."),
    ]),
    ("Errors", [
        ("Rejected frames by reason", "timeseries", "short", [
            (f"sum by (reason) (increase(hb_trainer_rejected_frames_total{R}))", "trainer {{reason}}"),
            (f"sum by (reason) (increase(hb_scorer_rejected_total{R}))", "scorer {{reason}}"),
            (f"sum by (reason) (increase(hb_producer_bad_records_total{R}))", "producer bad records {{reason}}"),
        ], "Each rejected frame is also on the dead-letter topic (hashbridge status counts them)."),
        ("Delivery errors and scorer replies", "timeseries", "short", [
            (f"sum(increase(hb_producer_delivery_errors_total{R}))", "producer delivery errors"),
            (f"sum by (outcome) (increase(hb_scorer_replies_total{R}))", "replies {{outcome}}"),
        ], ""),
        ("Distinct values per field (estimate)", "timeseries", "short", [
            ("hb_producer_distinct_values", "{{field}}"),
        ], "A field whose count keeps growing is likely an identifier that should be dropped."),
        ("Hashing key and spec", "table", "none", [
            ("hb_producer_key_info", ""),
        ], "Public key fingerprint only; the key never leaves the producer."),
    ]),
]


def _panel(pid: int, title: str, kind: str, unit: str, exprs: list[tuple[str, str]], desc: str,
           x: int, y: int, w: int) -> dict[str, Any]:
    panel: dict[str, Any] = {
        "id": pid, "type": kind, "title": title, "description": desc, "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": w, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "none"}},
        "targets": [{"datasource": DATASOURCE, "expr": expr, "legendFormat": legend or "__auto",
                     "refId": chr(ord("A") + i), "range": kind != "table", "instant": kind == "table"}
                    for i, (expr, legend) in enumerate(exprs)],
    }
    if kind == "stat":
        panel["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                            "colorMode": "value", "graphMode": "area", "textMode": "value_and_name"}
    if kind == "table":
        panel["options"] = {"showHeader": True}
        panel["targets"][0]["format"] = "table"
    return panel


def dashboard() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    pid, y = 1, 0
    for row_title, row in PANELS:
        panels.append({"id": pid, "type": "row", "title": row_title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        pid, y = pid + 1, y + 1
        w = 24 // min(len(row), 4) if len(row) < 4 else 6
        for i, spec in enumerate(row):
            panels.append(_panel(pid, *spec, x=(i * w) % 24, y=y + (i * w) // 24 * 8, w=w))
            pid += 1
        y += 8 * -(-len(row) * w // 24)
    return {
        "uid": UID, "title": "hashbridge pipeline", "tags": ["hashbridge"], "timezone": "browser",
        "schemaVersion": SCHEMA_VERSION, "version": 1, "editable": False, "graphTooltip": 1,
        "refresh": "10s", "time": {"from": "now-30m", "to": "now"}, "annotations": {"list": []},
        "templating": {"list": []}, "links": [], "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}")
