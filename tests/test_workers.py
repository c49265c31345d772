"""kingpost serve --workers N: N processes, each with its own model, on one port."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import httpx

from kingpost.testing import ServerProcess
from tests.conftest import MODELS


def children_of(pid: int) -> set[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return {int(child) for child in text.split()}


def test_two_workers_share_the_port_and_each_loads_the_model(start_server) -> None:
    server = start_server("worker_pid", "--workers", "2")
    assert server.process is not None
    workers = children_of(server.process.pid)
    assert len(workers) == 2
    seen: set[int] = set()
    # Each request on a new connection: the kernel spreads connections by their
    # addresses, so both workers answer long before this bound.
    deadline = time.monotonic() + 30
    for _ in range(400):
        if len(seen) == 2 or time.monotonic() > deadline:
            break
        with httpx.Client() as client:  # a new connection each time
            reply = client.post(server.url("/predict"), json={})
        assert reply.status_code == 200
        body = reply.json()
        assert body["pid"] == body["loaded_in"]  # the worker loaded its own model
        seen.add(body["pid"])
    assert seen == workers


def test_sigterm_stops_every_worker_and_exits_zero(start_server) -> None:
    server = start_server("worker_pid", "--workers", "2")
    assert server.process is not None
    workers = children_of(server.process.pid)
    assert server.stop(grace=20) == 0
    # The supervisor waited for (and reaped) its workers before exiting.
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


def test_a_worker_failing_to_load_stops_the_server_non_zero() -> None:
    server = ServerProcess(MODELS / "load_failure", "--workers", "2", wait_ready=False)
    with contextlib.suppress(RuntimeError):
        server.start()
    try:
        assert server.wait_exit(30) != 0
        assert "weights are corrupt" in server.logs()
    finally:
        server.stop()
