"""``kingpost serve --workers 2``: both processes drain one SQLite queue, and /metrics of
either reports the queue as it is (the gauges read the shared store, not one process)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import httpx

from kingpost.testing import ServerProcess
from tests.async_queue.conftest import write_model
from tests.async_queue.test_durability import fetch_statuses, read_log, submit_all

TOTAL = 300


def queue_gauge(text: str, status: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith("kingpost_async_queue_requests{") and f'status="{status}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_two_worker_processes_drain_one_sqlite_queue_once_each(tmp_path: Path) -> None:
    log = tmp_path / "runs.log"
    model = write_model(
        tmp_path / "model",
        database_url=f"sqlite:///{tmp_path / 'queue.db'}",
        poll_interval_seconds=0.05,
    )
    # Held until every request is in: the gauges are read while all of them wait.
    gate = tmp_path / "gate"
    env = {
        "ASYNC_TEST_LOG": str(log),
        "ASYNC_TEST_DELAY": "0.005",
        "ASYNC_TEST_LOAD_GATE": str(gate),
    }
    deadline = time.monotonic() + 60
    server = ServerProcess(model, "--workers", "2", env=env, wait_ready=False)
    with server, httpx.Client(timeout=10) as client:
        while True:  # listening (the model is still loading behind the gate)
            try:
                client.get(server.url("/healthz"))
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not listen"
                time.sleep(0.05)
        bodies = [{"model_input": {"n": n}, "priority": n % 3} for n in range(TOTAL)]
        ids, _ = asyncio.run(submit_all(server.base_url, bodies))
        assert len(ids) == TOTAL
        # Every process answers /metrics with the whole queue, whichever one is asked.
        for _ in range(6):
            metrics = client.get(server.url("/metrics")).text
            assert queue_gauge(metrics, "QUEUED") == TOTAL, metrics
        gate.write_text("open")
        while True:
            queue = client.get(server.url("/async_queue_status")).json()
            if queue["num_queued_requests"] + queue["num_in_progress_requests"] == 0:
                break
            assert time.monotonic() < deadline + 60, queue
            time.sleep(0.05)
        assert queue_gauge(client.get(server.url("/metrics")).text, "QUEUED") == 0
        statuses = asyncio.run(fetch_statuses(server.base_url, ids))
    assert {s["status"] for s in statuses} == {"SUCCEEDED"}
    runs = read_log(log)
    assert Counter(n for event, n, _, _ in runs if event == "start") == Counter(range(TOTAL))
    assert len({pid for event, _, pid, _ in runs if event == "start"}) == 2
