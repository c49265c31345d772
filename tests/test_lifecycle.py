"""Starting, loading, failing to load, and shutting down."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from pathlib import Path

import httpx

from kingpost.testing import ServerProcess
from tests.conftest import EXAMPLES, MODELS


def run_to_exit(model_dir: Path) -> ServerProcess:
    """Start a server that is expected to exit on its own (it may before the first poll)."""
    server = ServerProcess(model_dir, wait_ready=False)
    with contextlib.suppress(RuntimeError):
        server.start()
    return server


def wait_for_status(url: str, status: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while (answer := httpx.get(url).status_code) != status:
        assert time.monotonic() < deadline, f"{url} still answers {answer}"
        time.sleep(0.02)


def test_readiness_is_503_until_load_finishes(start_in_process, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    server = start_in_process("slow_load", wait_ready=False, env={"LOAD_GATE": str(gate)})
    assert server.client.get("/").status_code == 200
    not_ready = server.client.get("/v1/models/model")
    assert not_ready.status_code == 503
    assert "error" in not_ready.json()
    assert server.client.post("/predict", json={}).status_code == 503
    gate.touch()
    server.wait_until("/v1/models/model", timeout=20)
    assert server.client.post("/predict", json={}).json() == "loaded"
    assert "model ready (loaded in" in server.logs()


def test_a_load_failure_exits_non_zero_with_the_error() -> None:
    server = run_to_exit(MODELS / "load_failure")
    assert server.wait_exit(30) != 0
    logs = server.logs()
    assert "RuntimeError: weights are corrupt" in logs
    assert "model.py" in logs


def test_an_import_failure_exits_non_zero_naming_the_module() -> None:
    server = run_to_exit(MODELS / "import_failure")
    assert server.wait_exit(30) != 0
    assert "a_module_that_does_not_exist" in server.logs()


def test_a_signature_error_is_refused_at_start_naming_method_and_rule() -> None:
    server = run_to_exit(MODELS / "bad_signature")
    assert server.wait_exit(30) != 0
    assert "Model.predict: with two arguments the second must be annotated" in server.logs()


def test_sigterm_drains_in_flight_work_and_refuses_new_work(start_server) -> None:
    server = start_server(EXAMPLES / "streaming")
    streaming = threading.Event()
    received: list[bytes] = []

    def slow_request() -> None:
        payload = {"text": "one two three four five six", "delay": 0.3}
        with httpx.stream("POST", server.url("/predict"), json=payload, timeout=20) as reply:
            for chunk in reply.iter_raw():
                received.append(chunk)
                streaming.set()

    worker = threading.Thread(target=slow_request)
    worker.start()
    assert streaming.wait(20), "the stream never began"
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    wait_for_status(server.url("/v1/models/model"), 503)  # the drain has begun
    refused = httpx.post(server.url("/predict"), json={"text": "late"})
    assert refused.status_code == 503
    assert "shutting down" in refused.json()["error"]
    worker.join(20)
    assert b"".join(received) == b"one two three four five six "
    assert server.wait_exit(20) == 0
