"""Prometheus metrics of one model server, in a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "kingpost_requests",
            "Requests answered, by route and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "kingpost_request_duration_seconds",
            "Time to the end of the response, by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "kingpost_requests_in_flight", "Requests being served", registry=self.registry
        )
        self.ready = Gauge(
            "kingpost_model_ready", "1 when the model is ready", registry=self.registry
        )
        self.load_seconds = Gauge(
            "kingpost_model_load_seconds", "Time the model took to load", registry=self.registry
        )
        self._observers: dict[tuple[str, int], tuple[object, object]] = {}

    def observe(self, route: str, status: int, seconds: float) -> None:
        key = (route, status)
        pair = self._observers.get(key)
        if pair is None:
            pair = (self.requests.labels(route, str(status)), self.latency.labels(route))
            self._observers[key] = pair
        pair[0].inc()  # type: ignore[attr-defined]
        pair[1].observe(seconds)  # type: ignore[attr-defined]

    def render(self) -> bytes:
        return generate_latest(self.registry)
