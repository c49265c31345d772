"""One ``/metrics`` scrape that covers every worker of ``kingpost serve --workers N``.

Each worker keeps its numbers in memory (nothing on the request path changes)
and a thread of its own writes a snapshot of its registry to
``<dir>/<pid>.json`` every half second, by atomic rename. The worker that
answers a scrape takes its own numbers live, reads its siblings' snapshots,
and adds them up: counters and
histograms are summed, gauges too, except those named in ``GAUGE_MERGE``
(readiness is the least of the workers', a load time the longest, and a gauge
that every worker reads from the same shared store, such as the async queue's
depth, is the answering worker's own live reading). A sibling's numbers are
thus at most one flush interval old.

    shared = WorkerMetrics(directory, registry)
    shared.start()                  # in each worker, after the fork
    body = shared.render()          # the /metrics body, all workers together
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.samples import Sample

FLUSH_SECONDS = 0.5


def _answering(own: float, _sibling: float) -> float:
    """The answering worker's value (it comes first in ``merge``)."""
    return own


GAUGE_MERGE: dict[str, Callable[[float, float], float]] = {
    "kingpost_model_ready": min,
    "kingpost_model_load_seconds": max,
    # Read from the queue's store, the same in every worker: summing would count it N times.
    "kingpost_async_queue_requests": _answering,
    "kingpost_async_queue_oldest_age_seconds": _answering,
}

Family = dict[str, Any]


def snapshot(registry: CollectorRegistry) -> list[Family]:
    """The registry's families as plain data."""
    return [
        {
            "name": metric.name,
            "type": metric.type,
            "documentation": metric.documentation,
            "samples": [[s.name, s.labels, s.value] for s in metric.samples],
        }
        for metric in registry.collect()
    ]


def merge(snapshots: Iterable[list[Family]]) -> list[Metric]:
    """Several workers' families added up into one set, in first-seen order."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for families_of_worker in snapshots:
        for family in families_of_worker:
            name = family["name"]
            metric = families.get(name)
            if metric is None:
                metric = families[name] = Metric(name, family["documentation"], family["type"])
                values[name] = {}
            combine = GAUGE_MERGE.get(name) if metric.type == "gauge" else None
            samples = values[name]
            for sample_name, labels, value in family["samples"]:
                key = (sample_name, tuple(sorted(labels.items())))
                previous = samples.get(key)
                if previous is None:
                    samples[key] = value
                elif combine is not None:
                    samples[key] = combine(previous, value)
                else:
                    samples[key] = previous + value
    for name, metric in families.items():
        metric.samples = [
            Sample(sample_name, dict(labels), value)
            for (sample_name, labels), value in values[name].items()
        ]
    return list(families.values())


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def render(families: list[Metric]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return generate_latest(registry)


class WorkerMetrics:
    """This worker's snapshots in a directory shared with its siblings.

    A daemon thread writes them: it only reads numbers the event loop updates
    (whole ints and floats under the GIL), so the loop never waits for it.
    """

    def __init__(self, directory: Path, registry: CollectorRegistry, name: str = "") -> None:
        self.directory = directory
        self.registry = registry
        self.path = directory / f"{name or os.getpid()}.json"
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Write a snapshot now, then every FLUSH_SECONDS until ``stop()``."""
        self.flush()
        self._thread = threading.Thread(
            target=self._flush_forever, name="kingpost-metrics", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self.flush()  # the last numbers stay, so counters never go back

    def flush(self) -> None:
        try:
            data = orjson.dumps(snapshot(self.registry))
        except RuntimeError:  # a dict grew while it was read: the next flush has it
            return
        temporary = self.path.with_suffix(".tmp")
        temporary.write_bytes(data)
        os.replace(temporary, self.path)

    def render(self) -> bytes:
        own = snapshot(self.registry)
        return render(merge([own, *self._siblings()]))

    def _siblings(self) -> Iterator[list[Family]]:
        for path in sorted(self.directory.glob("*.json")):
            if path == self.path:
                continue
            with contextlib.suppress(OSError, orjson.JSONDecodeError):
                yield orjson.loads(path.read_bytes())

    def _flush_forever(self) -> None:
        while not self._stopped.wait(FLUSH_SECONDS):
            with contextlib.suppress(OSError):
                self.flush()
