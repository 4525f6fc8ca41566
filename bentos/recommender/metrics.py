"""The service's Prometheus metrics (``/metrics``, next to BentoML's own), and
:class:`TimedReader`, the feature reader that times each online read. Created per worker, in the
service's ``__init__``: prometheus_client is imported only then, once BentoML has set up its
multiprocess directory."""

from __future__ import annotations

import time


class ServiceMetrics:
    """One worker's metrics; names and labels are what dashboards and alerts read."""

    def __init__(self) -> None:
        # prometheus_client is imported here, after BentoML set up its multiprocess directory
        import prometheus_client as prom

        # Its _count is the number of requests served per model version, fallback and canary
        # variant (so no separate counter of served requests).
        self.latency = prom.Histogram(
            "recsys_recommend_latency_seconds",
            "Latency of /recommend by model version, outcome and canary variant",
            ["model_version", "fallback", "variant"],
            buckets=(0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25),
        )
        self.feature_latency = prom.Histogram(
            "recsys_feature_read_latency_seconds",
            "Latency of the online feature read per request",
            ["model_version"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05),
        )
        self.fallbacks = prom.Counter(
            "recsys_fallbacks_total",
            "Requests served the popularity fallback",
            ["reason", "variant"],
        )
        # One value per service, not per worker: "livemax" drops the pid label (and dead
        # workers' values) in BentoML's multiprocess collection.
        self.canary_share = prom.Gauge(
            "recsys_canary_share",
            "Configured share of customers routed to the challenger (0 without one)",
            multiprocess_mode="livemax",
        )
        self.errors = prom.Counter(
            "recsys_errors_total",
            "Requests that failed inside the service, by endpoint and canary variant",
            ["endpoint", "variant"],
        )
        self.challenger_load_failures = prom.Counter(
            "recsys_challenger_load_failures_total",
            "Challengers named by the canary state file that could not be loaded",
        )
        self.feedback_events = prom.Counter(
            "recsys_feedback_events_total", "Feedback events appended", ["type"]
        )
        self.served_log_errors = prom.Counter(
            "recsys_served_log_errors_total",
            "Served recommendations that could not be written to the served log",
            ["kind"],
        )

    def timed(self, reader, model_version: str) -> TimedReader:
        """``reader`` with each read timed in recsys_feature_read_latency_seconds."""
        return TimedReader(reader, self.feature_latency.labels(model_version))


class TimedReader:
    """A feature reader that records each read's latency in a Prometheus histogram."""

    def __init__(self, reader, histogram) -> None:
        self.reader = reader
        self.histogram = histogram

    def read(self, customer_id, items, as_of, bought=None):
        started = time.perf_counter()
        try:
            return self.reader.read(customer_id, items, as_of, bought)
        finally:
            self.histogram.observe(time.perf_counter() - started)

    def customer_profile(self, customer_id):
        return self.reader.customer_profile(customer_id)
