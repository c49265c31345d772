"""Two server processes drain one queue in PostgreSQL without running anything twice."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx

from kingpost.testing import ServerProcess
from tests.async_queue.conftest import write_model
from tests.async_queue.test_durability import fetch_statuses, read_log, submit_all

TOTAL = 400


def test_two_workers_share_one_postgres_queue_and_never_run_a_request_twice(
    tmp_path: Path, async_server: Callable[..., ServerProcess], postgres_url: str
) -> None:
    log = tmp_path / "runs.log"
    model = write_model(
        tmp_path / "model",
        database_url=postgres_url,
        deployment_id=f"shared-{uuid.uuid4().hex[:8]}",
        poll_interval_seconds=0.05,
    )
    env = {"ASYNC_TEST_LOG": str(log), "ASYNC_TEST_DELAY": "0.005"}
    one, two = async_server(model, env=env), async_server(model, env=env)
    bodies = [{"model_input": {"n": n}, "priority": n % 3} for n in range(TOTAL)]
    half = TOTAL // 2
    ids = asyncio.run(submit_all(one.base_url, bodies[:half]))[0]
    ids += asyncio.run(submit_all(two.base_url, bodies[half:]))[0]

    deadline = time.monotonic() + 90
    with httpx.Client(timeout=10) as client:
        while True:
            queue = client.get(one.url("/async_queue_status")).json()
            if queue["num_queued_requests"] + queue["num_in_progress_requests"] == 0:
                break
            assert time.monotonic() < deadline, queue
            time.sleep(0.05)
    statuses = asyncio.run(fetch_statuses(two.base_url, ids))
    assert {s["status"] for s in statuses} == {"SUCCEEDED"}

    runs = read_log(log)
    starts = Counter(n for event, n, _, _ in runs if event == "start")
    assert starts == Counter(range(TOTAL))  # each request ran exactly once
    workers = {pid for event, _, pid, _ in runs if event == "start"}
    assert len(workers) == 2  # and both processes took work
