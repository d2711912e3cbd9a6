"""Trainer metrics, declared once against a registry that tests can replace.

Workers count into their rows of shared memory (no per-process registries); the supervisor
serves them through :class:`SharedCollector`, which reads those rows at scrape time.
"""
from __future__ import annotations

import time
from typing import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from trainer import shm as S
from trainer.progressive import Progress


class SharedCollector(Collector):
    """Per-worker counters, latency histograms and per-partition lag, summed at scrape time."""

    def __init__(self, arrays: S.SharedArrays, topic: str) -> None:
        self.a, self.topic = arrays, topic

    def collect(self) -> Iterator[object]:
        a = self.a
        if a.counters is None:
            return
        c = a.counters.sum(axis=0)
        for name, col, doc in (("hb_trainer_records_in", S.W_RECORDS, "records consumed and learned"),
                               ("hb_trainer_frames_in", S.W_FRAMES, "frames learned"),
                               ("hb_trainer_bytes_in", S.W_BYTES, "frame bytes consumed"),
                               ("hb_trainer_batches", S.W_BATCHES, "consume batches processed"),
                               ("hb_trainer_delivery_errors", S.W_DELIVERY_ERR,
                                "dead letters the broker did not acknowledge")):
            yield CounterMetricFamily(name, doc, value=float(c[col]))
        rej = CounterMetricFamily("hb_trainer_rejected_frames", "frames sent to the DLQ", labels=["reason"])
        for i, reason in enumerate(S.REJECT_REASONS):
            if c[S.W_REJECT + i]:
                rej.add_metric([reason], float(c[S.W_REJECT + i]))
        yield rej
        nb = len(S.LAT_BUCKETS) + 1
        for which, (name, total) in enumerate((("hb_trainer_kernel_seconds", S.W_KERNEL_S),
                                               ("hb_trainer_batch_seconds", S.W_BATCH_S))):
            counts = c[S.W_LAT + which * nb:S.W_LAT + (which + 1) * nb]
            cum, buckets = 0.0, []
            for le, n in zip([*map(str, S.LAT_BUCKETS), "+Inf"], counts):
                cum += float(n)
                buckets.append((le, cum))
            yield HistogramMetricFamily(name, f"{name.split('_')[2]} latency", buckets=buckets,
                                        sum_value=float(c[total]))
        lag = GaugeMetricFamily("hb_trainer_consumer_lag", "high watermark minus next offset",
                                labels=["topic", "partition"])
        for p in range(a.offsets.shape[0]):
            high, nxt = int(a.highwater[p]), int(a.offsets[p])
            if high >= 0:
                lag.add_metric([self.topic, str(p)], float(max(high - max(nxt, 0), 0)))
        yield lag


class TrainerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.logloss = Gauge("hb_trainer_progressive_logloss", "progressive logloss", ["window"], registry=r)
        self.auc = Gauge("hb_trainer_progressive_auc", "progressive AUC (binned)", ["window"], registry=r)
        self.mean_p = Gauge("hb_trainer_mean_prediction", "mean prediction", ["window"], registry=r)
        self.pos_rate = Gauge("hb_trainer_positive_rate", "positive label rate", ["window"], registry=r)
        self.records = Gauge("hb_trainer_records_learned", "records in the model (exactly once)", registry=r)
        self.ckpt_seconds = Histogram("hb_trainer_checkpoint_seconds", "checkpoint duration", registry=r,
                                      buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.ckpts = Counter("hb_trainer_checkpoints", "snapshots written, by what triggered them", ["trigger"],
                             registry=r)
        self.ckpt_time = Gauge("hb_trainer_checkpoint_timestamp", "unix time of the last checkpoint", registry=r)
        self.ckpt_age = Gauge("hb_trainer_checkpoint_age_seconds", "seconds since the last checkpoint", registry=r)
        self.ckpt_age.set_function(self._age)
        self.version = Gauge("hb_trainer_model_version", "last checkpoint/model version", registry=r)
        self.restarts = Counter("hb_trainer_worker_restarts", "workers restarted", ["cause"], registry=r)
        self.deaths = Gauge("hb_trainer_worker_deaths_since_snapshot", "worker deaths in a row with no snapshot "
                            "written between them (the trainer stops past --max-restarts)", registry=r)
        self.delta_bytes = Counter("hb_trainer_delta_bytes", "delta bytes published (compressed)", registry=r)
        self.delta_records = Counter("hb_trainer_delta_records", "records covered by published deltas", registry=r)
        self.delta_coords = Counter("hb_trainer_delta_coordinates", "coordinates in published deltas", registry=r)
        self.delta_bpr = Gauge("hb_trainer_delta_bytes_per_record", "bytes per record of the last delta", registry=r)
        self.deltas_applied = Counter("hb_trainer_deltas_applied", "remote deltas added to the model", registry=r)
        self.deltas_rejected = Counter("hb_trainer_deltas_rejected", "deltas whose claims overlapped", registry=r)
        self.delta_rollbacks = Counter("hb_trainer_delta_rollbacks", "rollbacks to the accepted cut", registry=r)
        self.staleness = Histogram("hb_trainer_delta_staleness_seconds", "delta creation to application",
                                   registry=r, buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60))
        self.divergence = Gauge("hb_trainer_divergence", "L2 norm of our sampled weights minus a "
                                "remote instance's, at its last delta", registry=r)
        self.state_huge = Gauge("hb_trainer_state_hugepage_bytes", "model state bytes the OS backs with "
                                "huge pages (docs/trainer.md: /dev/shm huge=advise)", registry=r)
        self._last = 0.0

    def delta_published(self, nbytes: int, records: int, coords: int) -> None:
        self.delta_bytes.inc(nbytes)
        self.delta_records.inc(records)
        self.delta_coords.inc(coords)
        if records:
            self.delta_bpr.set(nbytes / records)

    def delta_applied(self, staleness: float, divergence: float) -> None:
        self.deltas_applied.inc()
        self.staleness.observe(max(staleness, 0.0))
        if divergence == divergence:  # not NaN
            self.divergence.set(divergence)

    def _age(self) -> float:
        return time.time() - self._last if self._last else 0.0

    def checkpointed(self, version: int, seconds: float, records: int, trigger: str) -> None:
        self._last = time.time()
        self.ckpts.labels(trigger).inc()
        self.ckpt_time.set(self._last)
        self.ckpt_seconds.observe(seconds)
        self.version.set(version)
        self.records.set(records)

    def progress(self, window: str, p: Progress) -> None:
        self.logloss.labels(window).set(p.logloss)
        self.auc.labels(window).set(p.auc)
        self.mean_p.labels(window).set(p.mean_prediction)
        self.pos_rate.labels(window).set(p.positive_rate)

    def attach(self, arrays: S.SharedArrays, topic: str) -> SharedCollector:
        col = SharedCollector(arrays, topic)
        self.registry.register(col)
        return col

    def serve(self, port: int) -> None:
        if port:
            start_http_server(port, registry=self.registry)
