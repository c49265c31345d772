"""``/metrics`` gauges of the async queue, read from the store at each scrape.

kingpost_async_queue_requests{model_id, deployment_id, status, priority}
    requests QUEUED or IN_PROGRESS (every status and priority of a known queue
    is reported, 0 included, so a drained queue reads 0 rather than vanishing)
kingpost_async_queue_oldest_age_seconds{model_id, deployment_id}
    how long the oldest QUEUED request has waited (0 when none waits)

registry.register(QueueGauges(store, queue="my-model/local", known=[("my-model", "local")]))
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kingpost.async_queue.models import Status
from kingpost.async_queue.store import AsyncStore

logger = logging.getLogger("kingpost.async")

PRIORITIES = (0, 1, 2)
COUNTED = (Status.QUEUED.value, Status.IN_PROGRESS.value)


class QueueGauges(Collector):
    """The queue's depth and the age of its oldest waiting request.

    ``queue`` limits the gauges to one queue (``kingpost serve``); None reports every
    queue in the store (the platform). ``known`` names the queues to report even
    when empty, as ``(model_id, deployment_id)``.
    """

    def __init__(
        self,
        store: AsyncStore,
        queue: str | None = None,
        known: Callable[[], Iterable[tuple[str, str]]] = tuple,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.queue = queue
        self.known = known
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        try:
            depth = self.store.depth(self.queue)
            oldest = self.store.oldest_queued(self.queue)
        except Exception:  # a scrape must not fail because the database is away
            logger.exception("reading the async queue's gauges failed")
            return
        counts: dict[tuple[str, str, str, int], int] = {}
        queues = set(self.known())
        for model_id, deployment_id, status, priority, count in depth:
            queues.add((model_id, deployment_id))
            counts[(model_id, deployment_id, status, priority)] = count
        requests = GaugeMetricFamily(
            "kingpost_async_queue_requests",
            "Async requests waiting or running, by status and priority",
            labels=["model_id", "deployment_id", "status", "priority"],
        )
        for model_id, deployment_id in sorted(queues):
            for status in COUNTED:
                for priority in PRIORITIES:
                    count = counts.get((model_id, deployment_id, status, priority), 0)
                    labels = [model_id, deployment_id, status, str(priority)]
                    requests.add_metric(labels, count)
        yield requests
        now = self.clock()
        ages = {
            (model_id, deployment_id): now - created for model_id, deployment_id, created in oldest
        }
        age = GaugeMetricFamily(
            "kingpost_async_queue_oldest_age_seconds",
            "How long the oldest queued async request has waited",
            labels=["model_id", "deployment_id"],
        )
        for key in sorted(queues | set(ages)):
            age.add_metric(list(key), max(0.0, ages.get(key, 0.0)))
        yield age
