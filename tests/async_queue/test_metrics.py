"""The queue's /metrics gauges, read from a real store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kingpost.async_queue.metrics import QueueGauges
from kingpost.async_queue.store import AsyncStore, NewRequest


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AsyncStore]:
    store = AsyncStore(f"sqlite:///{tmp_path / 'queue.db'}")
    yield store
    store.close()


def new(request_id: str, priority: int, created_at: float, queue: str = "m/d") -> NewRequest:
    model_id, deployment_id = queue.split("/")
    return NewRequest(
        id=request_id,
        queue=queue,
        model_id=model_id,
        deployment_id=deployment_id,
        priority=priority,
        webhook_endpoint=None,
        model_input=b"{}",
        created_at=created_at,
        expires_at=created_at + 600,
        max_attempts=3,
        initial_delay_ms=0,
        max_delay_ms=0,
    )


def samples(gauges: QueueGauges) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(gauges)
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


def test_depth_is_counted_by_status_and_priority(store: AsyncStore) -> None:
    store.submit([new("a", 0, 100.0), new("b", 0, 101.0), new("c", 2, 102.0)])
    store.claim("m/d", "worker", 1, now=103.0, lease_seconds=30)  # a: IN_PROGRESS
    found = samples(QueueGauges(store, "m/d", clock=lambda: 110.0))
    requests = "kingpost_async_queue_requests"
    ids = {"model_id": "m", "deployment_id": "d"}
    assert found[key(requests, **ids, status="QUEUED", priority="0")] == 1
    assert found[key(requests, **ids, status="IN_PROGRESS", priority="0")] == 1
    assert found[key(requests, **ids, status="QUEUED", priority="2")] == 1
    assert found[key(requests, **ids, status="QUEUED", priority="1")] == 0
    # The oldest QUEUED request is b (a is running): 110 - 101.
    assert found[key("kingpost_async_queue_oldest_age_seconds", **ids)] == pytest.approx(9.0)


def test_a_known_empty_queue_reads_zero(store: AsyncStore) -> None:
    gauges = QueueGauges(store, "m/d", known=lambda: [("m", "d")], clock=lambda: 5.0)
    found = samples(gauges)
    ids = {"model_id": "m", "deployment_id": "d"}
    assert found[key("kingpost_async_queue_requests", **ids, status="QUEUED", priority="0")] == 0
    assert found[key("kingpost_async_queue_oldest_age_seconds", **ids)] == 0


def test_one_queues_gauges_leave_other_queues_out(store: AsyncStore) -> None:
    store.submit([new("a", 0, 1.0, queue="m/d"), new("b", 1, 1.0, queue="other/x")])
    labels = {labels for _, labels in samples(QueueGauges(store, "m/d", clock=lambda: 2.0))}
    assert all(("model_id", "m") in label for label in labels)
    everything = samples(QueueGauges(store, None, clock=lambda: 2.0))
    other = key(
        "kingpost_async_queue_requests",
        model_id="other",
        deployment_id="x",
        status="QUEUED",
        priority="1",
    )
    assert everything[other] == 1
