"""Producer metrics, declared once against a registry that tests can replace.

Labels are bounded (topic, reason, field name from the schema); never a value or a key.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Info, start_http_server


class ProducerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.records_out = Counter("hb_producer_records", "Records put into frames", ["topic"], registry=r)
        self.frames_out = Counter("hb_producer_frames", "Frames handed to the Kafka client", ["topic"],
                                  registry=r)
        self.bytes_out = Counter("hb_producer_frame_bytes", "Frame bytes before compression", ["topic"],
                                 registry=r)
        self.records_acked = Counter("hb_producer_records_acked", "Records in frames the broker acknowledged",
                                     ["topic"], registry=r)
        self.delivery_errors = Counter("hb_producer_delivery_errors", "Frames the broker did not take",
                                       ["topic"], registry=r)
        self.bad_records = Counter("hb_producer_bad_records", "Input records skipped", ["reason"], registry=r)
        self.hash_rate = Gauge("hb_producer_hash_records_per_second", "Records hashed per second (last batch)",
                               registry=r)
        self.distinct = Gauge("hb_producer_distinct_values", "Distinct values seen per field (estimate)",
                              ["field"], registry=r)
        self.key = Info("hb_producer_key", "Public fingerprint of the hashing key and spec", registry=r)

    def serve(self, port: int) -> None:
        if port:
            start_http_server(port, registry=self.registry)
