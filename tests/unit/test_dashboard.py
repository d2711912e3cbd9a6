"""The provisioned Grafana dashboard is valid, current, and only queries metrics the services export."""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.test_metrics_names import exported_names

OPS = Path(__file__).resolve().parents[2] / "ops"
DASHBOARD = OPS / "grafana" / "dashboards" / "hashbridge.json"
METRIC = re.compile(r"\bhb_[a-z0-9_]+\b")


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _queries(d: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(p["title"], t) for p in d["panels"] if p["type"] != "row" for t in p["targets"]]


def test_grafana_shape(dashboard: dict[str, Any]) -> None:
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert dashboard["uid"] and len(dashboard["uid"]) <= 40 and dashboard["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    datasource_uid = _datasource()["uid"]
    for panel in dashboard["panels"]:
        assert panel["title"] and {"h", "w", "x", "y"} <= set(panel["gridPos"])
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": datasource_uid}
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs))
        for t in panel["targets"]:
            assert t["expr"].strip() and t["datasource"]["uid"] == datasource_uid


def test_covers_throughput_lag_progressive_metrics_and_model_age(dashboard: dict[str, Any]) -> None:
    exprs = " ".join(t["expr"] for _, t in _queries(dashboard))
    for needed in ("hb_trainer_records_in_total", "hb_producer_records_acked_total", "hb_trainer_consumer_lag",
                   "hb_scorer_lag", "hb_trainer_progressive_logloss", "hb_trainer_progressive_auc",
                   "hb_scorer_model_age_seconds", "hb_trainer_rejected_frames_total"):
        assert needed in exprs, needed


def test_every_queried_metric_is_exported(dashboard: dict[str, Any]) -> None:
    exported = exported_names()
    unknown = {(title, name) for title, t in _queries(dashboard) for name in METRIC.findall(t["expr"])
               if name not in exported}
    assert not unknown, f"PromQL names no service exports: {sorted(unknown)}"


def test_json_matches_its_generator() -> None:
    spec = importlib.util.spec_from_file_location("make_dashboard", OPS / "grafana" / "make_dashboard.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert DASHBOARD.read_text() == module.render(), "run python ops/grafana/make_dashboard.py"


def _datasource() -> dict[str, Any]:
    doc = yaml.safe_load((OPS / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (ds,) = doc["datasources"]
    return ds


def test_provisioning_files() -> None:
    ds = _datasource()
    assert ds["type"] == "prometheus" and ds["url"].startswith("http://prometheus:")
    prov = yaml.safe_load((OPS / "grafana" / "provisioning" / "dashboards" / "hashbridge.yml").read_text())
    assert prov["apiVersion"] == 1 and prov["providers"][0]["options"]["path"]
    prom = yaml.safe_load((OPS / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in prom["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]}
    targets |= {f"{name}:{sd['port']}" for job in prom["scrape_configs"]
                for sd in job.get("dns_sd_configs", []) for name in sd["names"]}
    assert {"producer:9101", "trainer:9102", "scorer:9103"} <= targets
    services = yaml.safe_load((OPS.parent / "compose.yaml").read_text())["services"]
    for name, port in (("producer", 9101), ("trainer", 9102), ("scorer", 9103)):
        env = services[name]["environment"]
        assert env[f"HASHBRIDGE_{name.upper()}_METRICS_PORT"] == str(port), name
