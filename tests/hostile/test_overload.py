"""Past runtime.max_queue waiting for a slot, a request gets 503 with Retry-After at once."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from kingpost.testing import ServerProcess

SLOW = """
import asyncio


class Model:
    async def predict(self, model_input):
        await asyncio.sleep(1.5)
        return {"done": True}
"""


def test_requests_past_the_queue_are_refused_with_retry_after(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.py").write_text(SLOW)
    config = "runtime:\n  predict_concurrency: 1\n  max_queue: 1\n"
    (tmp_path / "config.yaml").write_text(config)
    server = start_server(tmp_path)

    def call(_: int) -> tuple[int, float, httpx.Response]:
        started = time.monotonic()
        reply = httpx.post(server.url("/predict"), json={}, timeout=30)
        return reply.status_code, time.monotonic() - started, reply

    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        outcomes = list(pool.map(call, range(5)))
    statuses = [status for status, _, _ in outcomes]
    # One runs, one waits; the rest are refused (a late starter may find a free slot).
    assert set(statuses) <= {200, 503} and statuses.count(503) >= 2
    for status, elapsed, reply in outcomes:
        if status == 503:
            assert elapsed < 1.2  # refused at once, not after waiting
            assert int(reply.headers["retry-after"]) >= 1
            assert "max_queue" in reply.json()["error"]
