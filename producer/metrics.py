"""Producer metrics, declared once against a registry that tests can replace.

Labels are bounded (topic, reason, field name from the schema); never a value or a key.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server

# seconds per batch: a 4096-record frame takes milliseconds, a 16 MiB CSV block up to seconds
BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


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
        self.batch_seconds = Histogram("hb_producer_batch_seconds", "Read+hash+encode+produce per batch",
                                       buckets=BATCH_BUCKETS, registry=r)
        self.hash_seconds = Histogram("hb_producer_hash_seconds", "Keyed hashing per batch",
                                      buckets=BATCH_BUCKETS, registry=r)
        # --watch: files by where they ended (done, failed), and files waiting in the spool
        self.spool_files = Counter("hb_producer_spool_files", "Spool files published (done) or set aside (failed)",
                                   ["outcome"], registry=r)
        self.spool_pending = Gauge("hb_producer_spool_pending_files", "Files waiting in the spool directory",
                                   registry=r)
        self.key = Info("hb_producer_key", "Public fingerprint of the hashing key and spec", registry=r)

    def serve(self, port: int) -> None:
        if port:
            start_http_server(port, registry=self.registry)
