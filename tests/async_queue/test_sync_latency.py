"""Sync requests keep their latency while the async queue is full."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from kingpost.testing import ServerProcess
from tests.async_queue.conftest import write_model
from tests.async_queue.test_durability import submit_all

SAMPLES = 200


def sync_p50(client: httpx.Client, url: str) -> float:
    times = []
    for n in range(SAMPLES):
        started = time.perf_counter()
        response = client.post(url, json={"n": n})
        times.append(time.perf_counter() - started)
        assert response.status_code == 200
    return statistics.median(times)


def test_sync_p50_stays_within_twice_idle_while_the_queue_is_full(
    tmp_path: Path, async_server: Callable[..., ServerProcess]
) -> None:
    model = write_model(tmp_path / "model", database_url=f"sqlite:///{tmp_path / 'queue.db'}")
    server = async_server(model, env={"ASYNC_TEST_DELAY": "0.005"})
    url = server.url("/predict")
    with httpx.Client(timeout=10) as client:
        sync_p50(client, url)  # warm up
        idle = sync_p50(client, url)
        # Long enough that the queue is still full when the measurement ends.
        bodies = [{"model_input": {"n": n, "delay": 0.05}} for n in range(600)]
        asyncio.run(submit_all(server.base_url, bodies))
        busy = sync_p50(client, url)
        queue = client.get(server.url("/async_queue_status")).json()
    assert queue["num_queued_requests"] > 0, "the queue drained before the measurement ended"
    # Generous: noise on a shared machine is large next to a few milliseconds.
    assert busy <= 2 * idle + 0.002, f"sync p50 {busy * 1000:.1f} ms busy, {idle * 1000:.1f} idle"
