"""The platform's ``/metrics``: every family labelled by model, environment and deployment.

The names are the model server's (:mod:`kingpost.observe.metrics`), so one
dashboard reads both: ``kingpost_requests_total`` and
``kingpost_request_duration_seconds`` by route (the invocation's endpoint:
``predict``, ``sync``, ``websocket``, ``wake``) and status, and
``kingpost_requests_in_flight``. The platform adds what only it knows: requests
parked for a replica, replicas by state, and cold starts (a pool going from no
replica to a ready one) with how long they took.

Each pool holds its :class:`PoolStats` (made once, when the pool is made), so
the request path only adds to a histogram; the families are built at a scrape.

    metrics = PlatformMetrics(platform)
    pool.stats.observe("predict", 200, 0.004)   # once per request, by the app
    metrics.render()                            # the /metrics body
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from kingpost.observe.metrics import (
    REQUEST_BUCKETS,
    TTFT_BUCKETS,
    Histogram,
    Labels,
    request_families,
)

if TYPE_CHECKING:
    from kingpost.platform.controller import Platform

LABELS = ("model_name", "environment", "deployment")
REPLICA_STATES = ("starting", "ready", "restarting", "retiring")
COLD_START_BUCKETS = TTFT_BUCKETS  # from under a second to minutes of loading


class PoolStats:
    """What one pool's requests and replicas did, kept after the pool is gone."""

    __slots__ = ("cold_start", "cold_starts", "labels", "latency")

    def __init__(self, model: str, environment: str | None, deployment: str) -> None:
        self.labels = [model, environment or "", deployment]
        self.latency: dict[tuple[str, int | None], Histogram] = {}
        self.cold_starts = 0
        self.cold_start = Histogram(COLD_START_BUCKETS)

    def observe(self, route: str, status: int | None, seconds: float) -> None:
        """One request; ``status`` None when the replica kind does not report it."""
        histogram = self.latency.get((route, status))
        if histogram is None:
            histogram = self.latency[(route, status)] = Histogram(REQUEST_BUCKETS)
        histogram.observe(seconds)

    def observe_cold_start(self, seconds: float) -> None:
        self.cold_starts += 1
        self.cold_start.observe(seconds)


class PlatformMetrics(Collector):
    """The registry behind the platform's ``/metrics``."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.stats: dict[tuple[str, str | None], PoolStats] = {}
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def stats_for(self, deployment_id: str, environment: str | None, model: str) -> PoolStats:
        key = (deployment_id, environment)
        stats = self.stats.get(key)
        if stats is None:
            stats = self.stats[key] = PoolStats(model, environment, deployment_id)
        return stats

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def collect(self) -> Iterator[Metric]:
        labels = Labels(dict.fromkeys(LABELS, ""))
        requests, latency = request_families(labels)
        cold_starts = labels.counter(
            "kingpost_cold_starts", "Pools that went from no replica to a ready one"
        )
        cold_start = labels.histogram(
            "kingpost_cold_start_seconds", "From scaling up from zero to the first ready replica"
        )
        for stats in list(self.stats.values()):
            for (route, status), histogram in list(stats.latency.items()):
                values = [*stats.labels, route, "unknown" if status is None else str(status)]
                requests.add_metric(values, histogram.count)
                latency.add_metric(values, histogram.cumulative(), histogram.total)
            cold_starts.add_metric(stats.labels, stats.cold_starts)
            cold_start.add_metric(
                stats.labels, stats.cold_start.cumulative(), stats.cold_start.total
            )
        yield requests
        yield latency
        yield cold_starts
        yield cold_start
        in_flight = labels.gauge("kingpost_requests_in_flight", "Requests at replicas now")
        parked = labels.gauge(
            "kingpost_requests_parked", "Requests waiting for a replica with room"
        )
        replicas = labels.gauge(
            "kingpost_replicas", "Replicas of a deployment in an environment", ("state",)
        )
        for pool in list(self.platform.pools.values()):
            stats = pool.stats
            in_flight.add_metric(stats.labels, pool.in_flight)
            parked.add_metric(stats.labels, len(pool.parked))
            counts = dict.fromkeys(REPLICA_STATES, 0)
            for replica in pool.replicas:
                state = replica.state.value
                counts[state] = counts.get(state, 0) + 1
            counts["retiring"] = len(pool.retiring)
            for state, count in counts.items():
                replicas.add_metric([*stats.labels, state], count)
        yield in_flight
        yield parked
        yield replicas
