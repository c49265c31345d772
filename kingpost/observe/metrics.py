"""The metric families of a model server, named the way LLM dashboards expect.

Names and buckets follow vLLM's (``vllm:time_to_first_token_seconds`` is
``kingpost_time_to_first_token_seconds`` here, with the same buckets) and TGI's
where vLLM has none (batch sizes). On the platform every family also carries
the labels ``model_name``, ``environment`` and ``deployment`` (``labels=``); a
single server's scrape target names its model already, so it adds none.

Counts and sums are plain integers and floats updated on the event loop (the
one thread that serves requests) or, for engines, under the GIL by a single
writer per number; they become Prometheus samples only when ``/metrics`` is
read, so the request path takes no lock and formats nothing.

    metrics = ServingMetrics(labels={"model_name": "gemma", "environment": "production"})
    metrics.observe("predict", 200, 0.012)      # once per request, by the core
    GENERATIONS.observe(12, 40, 0.08, 0.01)     # once per generation, by the engine
    metrics.render()                             # the /metrics body
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from kingpost.observe.multiworker import WorkerMetrics

logger = logging.getLogger("kingpost.server")

# Request latency, as before (seconds).
REQUEST_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
# vLLM's buckets for time to first token and time per output token.
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
TPOT_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
# vLLM's request_queue_time_seconds buckets.
QUEUE_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
    120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip
# Token counts per request (vLLM: 1-2-5 steps up to the context length).
TOKEN_BUCKETS = tuple(float(step * 10**power) for power in range(6) for step in (1, 2, 5))
# Sequences decoded together in one step (TGI's batch size).
BATCH_BUCKETS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0)

# Numbers a model reports with kingpost_metrics() that have a conventional family too.
CONVENTIONAL_MODEL_NUMBERS = {
    "prefix_cache_queries_total": "kingpost_prefix_cache_queries",
    "prefix_cache_hits_total": "kingpost_prefix_cache_hits",
}


class Histogram:
    """Counts per bucket (the last one is +Inf) and the sum of the observed values."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, float]]:
        buckets = []
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            buckets.append((floatToGoString(bound), float(running)))
        return buckets


class Value:
    """A number set now and then (readiness, load time), read at each scrape."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def set(self, value: float) -> None:
        self.value = float(value)


class Labels:
    """The constant labels every family carries, as names and values."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.names = list(values)
        self.values = list(values.values())

    def counter(self, name: str, documentation: str, extra: tuple[str, ...] = ()) -> Any:
        return CounterMetricFamily(name, documentation, labels=[*self.names, *extra])

    def gauge(self, name: str, documentation: str, extra: tuple[str, ...] = ()) -> Any:
        return GaugeMetricFamily(name, documentation, labels=[*self.names, *extra])

    def histogram(self, name: str, documentation: str, extra: tuple[str, ...] = ()) -> Any:
        return HistogramMetricFamily(name, documentation, labels=[*self.names, *extra])


def request_families(labels: Labels) -> tuple[Any, Any]:
    """The families of requests answered and their latency, by route and status (a model
    server's and the platform's ``/metrics`` alike)."""
    requests = labels.counter(
        "kingpost_requests", "Requests answered, by route and status", ("route", "status")
    )
    latency = labels.histogram(
        "kingpost_request_duration_seconds",
        "Time to the end of the response, by route and status",
        ("route", "status"),
    )
    return requests, latency


class RequestStats(Collector):
    """Requests answered, and their latency, by route and status."""

    def __init__(self, labels: Labels) -> None:
        self.labels = labels
        self.latency: dict[tuple[str, int], Histogram] = {}

    def observe(self, route: str, status: int, seconds: float) -> None:
        key = (route, status)
        histogram = self.latency.get(key)
        if histogram is None:
            histogram = self.latency[key] = Histogram(REQUEST_BUCKETS)
        histogram.observe(seconds)

    def collect(self) -> Iterator[Metric]:
        labels = self.labels
        requests, latency = request_families(labels)
        for (route, status), histogram in list(self.latency.items()):
            values = [*labels.values, route, str(status)]
            requests.add_metric(values, histogram.count)
            latency.add_metric(values, histogram.cumulative(), histogram.total)
        yield requests
        yield latency


class GenerationStats:
    """What the engines generated: tokens, time to first token, time per output token.

    One instance per process (:data:`GENERATIONS`): the engine that records into it
    and the server that reports it are in the same process, whatever model it is.
    """

    def __init__(self) -> None:
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.ttft = Histogram(TTFT_BUCKETS)
        self.tpot = Histogram(TPOT_BUCKETS)
        self.prompt_lengths = Histogram(TOKEN_BUCKETS)
        self.generation_lengths = Histogram(TOKEN_BUCKETS)
        self.batch_sizes = Histogram(BATCH_BUCKETS)
        self.finished: dict[str, int] = {}

    def observe(
        self,
        prompt_tokens: int,
        generation_tokens: int,
        ttft: float | None,
        tpot: float | None,
        finish_reason: str = "stop",
    ) -> None:
        """One finished (or stopped) generation."""
        self.prompt_tokens += prompt_tokens
        self.generation_tokens += generation_tokens
        self.prompt_lengths.observe(prompt_tokens)
        self.generation_lengths.observe(generation_tokens)
        if ttft is not None:
            self.ttft.observe(ttft)
        if tpot is not None:
            self.tpot.observe(tpot)
        self.finished[finish_reason] = self.finished.get(finish_reason, 0) + 1

    def observe_batch(self, size: int) -> None:
        """One decode step of ``size`` sequences (engines that batch call this)."""
        self.batch_sizes.observe(size)

    def collect(self, labels: Labels) -> Iterator[Metric]:
        values = labels.values
        prompt = labels.counter("kingpost_prompt_tokens", "Prompt tokens read")
        prompt.add_metric(values, self.prompt_tokens)
        generated = labels.counter("kingpost_generation_tokens", "Tokens generated")
        generated.add_metric(values, self.generation_tokens)
        yield prompt
        yield generated
        finished = labels.counter(
            "kingpost_request_success", "Generations finished, by reason", ("finished_reason",)
        )
        for reason, count in list(self.finished.items()):
            finished.add_metric([*values, reason], count)
        yield finished
        for name, documentation, histogram in (
            ("kingpost_time_to_first_token_seconds", "Time to the first token", self.ttft),
            ("kingpost_time_per_output_token_seconds", "Time per token after the first", self.tpot),
            ("kingpost_request_prompt_tokens", "Prompt tokens per request", self.prompt_lengths),
            (
                "kingpost_request_generation_tokens",
                "Tokens generated per request",
                self.generation_lengths,
            ),
            ("kingpost_batch_size", "Sequences decoded together per step", self.batch_sizes),
        ):
            family = labels.histogram(name, documentation)
            family.add_metric(values, histogram.cumulative(), histogram.total)
            yield family


GENERATIONS = GenerationStats()


class QueueStats:
    """Requests waiting for a concurrency slot, and how long they waited.

    One per process (:data:`QUEUE`), like :data:`GENERATIONS`: the slot is taken
    deep in the hook runner, which knows no registry.
    """

    __slots__ = ("wait", "waiting")

    def __init__(self) -> None:
        self.waiting = 0
        self.wait = Histogram(QUEUE_BUCKETS)

    def observe(self, seconds: float) -> None:
        self.wait.observe(seconds)

    def observe_no_wait(self) -> None:
        """A slot that was free: the first bucket, without a search."""
        self.wait.counts[0] += 1


QUEUE = QueueStats()


class ServingMetrics:
    """The registry of one model server and the numbers behind it.

    ``watch()`` names the live numbers read at each scrape (in-flight requests,
    the model's own report, an async queue); ``observe`` is the per-request call.
    """

    def __init__(
        self,
        labels: Mapping[str, str] | None = None,
        generations: GenerationStats = GENERATIONS,
        queue: QueueStats | None = None,
    ) -> None:
        self.labels = Labels(labels or {})
        self.registry = CollectorRegistry()
        self.requests = RequestStats(self.labels)
        self.observe = self.requests.observe
        self.queue = QUEUE if queue is None else queue
        self.generations = generations
        self.shared: WorkerMetrics | None = None
        self.ready = Value()
        self.load_seconds = Value()
        self._in_flight: Callable[[], float] = lambda: 0.0
        self._model: Callable[[], Any] = lambda: None
        self._gauges: dict[str, tuple[str, Callable[[], float]]] = {}
        self.registry.register(self.requests)
        self.registry.register(_Collect(self._collect))

    def watch(self, in_flight: Callable[[], float], model: Callable[[], Any]) -> None:
        """Read the in-flight count and the model's own numbers at each scrape."""
        self._in_flight = in_flight
        self._model = model

    def add_gauge(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A number read at each scrape, e.g. ``kingpost_async_queue_depth``."""
        self._gauges[name] = (documentation, read)

    def share(self, directory: Path) -> None:
        """Serve every worker's numbers: ``--workers N`` gives each the same ``directory``."""
        self.shared = WorkerMetrics(directory, self.registry)
        self.shared.start()

    def render(self) -> bytes:
        if self.shared is not None:
            return self.shared.render()
        return generate_latest(self.registry)

    def _collect(self) -> Iterator[Metric]:
        labels = self.labels
        values = labels.values
        in_flight = float(self._in_flight())
        waiting = float(self.queue.waiting)
        for name, documentation, value in (
            ("kingpost_requests_in_flight", "Requests doing model work now", in_flight),
            ("kingpost_num_requests_running", "Requests running on the model", in_flight - waiting),
            ("kingpost_num_requests_waiting", "Requests waiting for a slot", waiting),
            ("kingpost_model_ready", "1 when the model is ready", self.ready.value),
            ("kingpost_model_load_seconds", "Time the model took to load", self.load_seconds.value),
        ):
            gauge = labels.gauge(name, documentation)
            gauge.add_metric(values, value)
            yield gauge
        queue = labels.histogram(
            "kingpost_request_queue_time_seconds", "Time waiting for a concurrency slot"
        )
        queue.add_metric(values, self.queue.wait.cumulative(), self.queue.wait.total)
        yield queue
        yield from self.generations.collect(labels)
        for name, (documentation, read) in list(self._gauges.items()):
            gauge = labels.gauge(name, documentation)
            try:
                gauge.add_metric(values, float(read()))
            except Exception:
                logger.exception("reading the metric %s failed", name)
                continue
            yield gauge
        yield from self._model_numbers()

    def _model_numbers(self) -> Iterator[Metric]:
        """``kingpost_model_<name>`` for each number the model's ``kingpost_metrics()`` gives.

        A name ending in ``_total`` is a counter, any other a gauge; the prefix-cache
        counters also appear under their conventional names.
        """
        report = getattr(self._model(), "kingpost_metrics", None)
        if report is None:
            return
        try:
            numbers: Mapping[str, float] = report()
        except Exception:
            logger.exception("the model's kingpost_metrics() failed")
            return
        labels = self.labels
        for name, value in numbers.items():
            if name.endswith("_total"):
                family = labels.counter(f"kingpost_model_{name.removesuffix('_total')}", name)
            else:
                family = labels.gauge(f"kingpost_model_{name}", f"model: {name}")
            family.add_metric(labels.values, value)
            yield family
            conventional = CONVENTIONAL_MODEL_NUMBERS.get(name)
            if conventional is not None:
                family = labels.counter(conventional, f"model: {name}")
                family.add_metric(labels.values, value)
                yield family


class _Collect(Collector):
    def __init__(self, collect: Callable[[], Iterator[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterator[Metric]:
        return self._collect()
