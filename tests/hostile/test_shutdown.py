"""Stopping past the grace period: JSON 503s, no tracebacks, the grace applied once; a
second signal exits at once."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from kingpost.testing import ServerProcess

SLOW = """
import asyncio


class Model:
    async def predict(self, model_input):
        await asyncio.sleep(60)
        return {"late": True}
"""


def slow_model(tmp_path: Path) -> Path:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.py").write_text(SLOW)
    (tmp_path / "config.yaml").write_text("runtime:\n  predict_concurrency: 20\n")
    return tmp_path


def start_requests(
    server: ServerProcess, count: int
) -> tuple[list[httpx.Response], list[threading.Thread]]:
    replies: list[httpx.Response] = []

    def call() -> None:
        with contextlib.suppress(httpx.TransportError):
            replies.append(httpx.post(server.url("/predict"), json={}, timeout=30))

    threads = [threading.Thread(target=call) for _ in range(count)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 20
    while in_flight(server) < count:  # every request is inside the model now
        assert time.monotonic() < deadline, server.logs()
        time.sleep(0.05)
    return replies, threads


def in_flight(server: ServerProcess) -> float:
    for line in httpx.get(server.url("/metrics")).text.splitlines():
        if line.startswith("kingpost_requests_in_flight "):
            return float(line.split()[1])
    return 0.0


def test_past_the_grace_period_in_flight_requests_get_a_json_503(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = start_server(slow_model(tmp_path), "--graceful-timeout", "2")
    replies, threads = start_requests(server, 10)
    assert server.process is not None
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    server.wait_exit(20)
    elapsed = time.monotonic() - started
    for thread in threads:
        thread.join(10)
    assert 1.5 < elapsed < 4.5, f"exited after {elapsed:.1f} s of a 2 s grace period"
    assert len(replies) == 10
    assert {reply.status_code for reply in replies} == {503}
    assert all(reply.headers["content-type"] == "application/json" for reply in replies)
    logs = server.logs()
    assert "Traceback" not in logs and "Exception in ASGI application" not in logs


def test_a_second_signal_exits_at_once(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = start_server(slow_model(tmp_path), "--graceful-timeout", "30")
    _, threads = start_requests(server, 2)
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    started = time.monotonic()
    server.process.send_signal(signal.SIGINT)
    server.wait_exit(10)
    assert time.monotonic() - started < 3
    for thread in threads:
        thread.join(10)
