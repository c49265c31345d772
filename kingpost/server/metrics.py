"""Prometheus metrics of one model server, in a registry of its own.

Per-request counts and latencies are plain integers and floats updated on the
event loop (the only thread that serves requests), and turned into Prometheus
samples when ``/metrics`` is read: no lock is taken on the request path.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

logger = logging.getLogger("kingpost.server")

LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class LatencyHistogram:
    """Counts per bucket (the last one is +Inf) and the sum of observed seconds."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, float]]:
        buckets = []
        running = 0
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), self.counts, strict=True):
            running += count
            buckets.append((floatToGoString(bound), float(running)))
        return buckets


class RequestCollector(Collector):
    """Requests answered by route and status, and their latency by route."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, int], int] = {}
        self.latency: dict[str, LatencyHistogram] = {}

    def observe(self, route: str, status: int, seconds: float) -> None:
        counts = self.counts
        key = (route, status)
        counts[key] = counts.get(key, 0) + 1
        histogram = self.latency.get(route)
        if histogram is None:
            histogram = self.latency[route] = LatencyHistogram()
        histogram.observe(seconds)

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "kingpost_requests",
            "Requests answered, by route and status",
            labels=["route", "status"],
        )
        for (route, status), count in list(self.counts.items()):
            requests.add_metric([route, str(status)], count)
        yield requests
        latency = HistogramMetricFamily(
            "kingpost_request_duration_seconds",
            "Time to the end of the response, by route",
            labels=["route"],
        )
        for route, histogram in list(self.latency.items()):
            latency.add_metric([route], histogram.cumulative(), histogram.total)
        yield latency


class ModelCollector(Collector):
    """Numbers the model reports about itself, read at each scrape.

    A model (an engine, or a user's class) may define ``kingpost_metrics()``
    returning ``{name: value}``; each becomes ``kingpost_model_<name>``, a counter
    when the name ends in ``_total`` and a gauge otherwise.

        def kingpost_metrics(self):
            return {"active_sequences": 3, "generated_tokens_total": 1200}
    """

    def __init__(self, model: Callable[[], Any]) -> None:
        self.model = model

    def collect(self) -> Iterator[Metric]:
        report = getattr(self.model(), "kingpost_metrics", None)
        if report is None:
            return
        try:
            values: Mapping[str, float] = report()
        except Exception:
            logger.exception("the model's kingpost_metrics() failed")
            return
        for name, value in values.items():
            if name.endswith("_total"):
                yield CounterMetricFamily(
                    f"kingpost_model_{name.removesuffix('_total')}", f"model: {name}", value
                )
            else:
                yield GaugeMetricFamily(f"kingpost_model_{name}", f"model: {name}", value)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = RequestCollector()
        self.registry.register(self.requests)
        self.observe = self.requests.observe
        self.in_flight = Gauge(
            "kingpost_requests_in_flight",
            "Requests doing model work now",
            registry=self.registry,
        )
        self.ready = Gauge(
            "kingpost_model_ready", "1 when the model is ready", registry=self.registry
        )
        self.load_seconds = Gauge(
            "kingpost_model_load_seconds", "Time the model took to load", registry=self.registry
        )

    def watch(self, in_flight: Callable[[], float], model: Callable[[], Any]) -> None:
        """Read the in-flight count and the model's own numbers at each scrape."""
        self.in_flight.set_function(in_flight)
        self.registry.register(ModelCollector(model))

    def render(self) -> bytes:
        return generate_latest(self.registry)
