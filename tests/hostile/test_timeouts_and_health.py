"""A timed-out sync hook is told to stop; readiness never waits behind model work."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from kingpost.testing import ServerProcess

WATCHING_MODEL = """
import time

import fastapi


class Model:
    def predict(self, model_input, request: fastapi.Request):
        if model_input.get("wait"):
            stop = request.state.watch_disconnect()
            deadline = time.monotonic() + 30
            while not stop.is_set() and time.monotonic() < deadline:
                time.sleep(0.01)
            return {"stopped": stop.is_set()}
        return {"quick": True}
"""

BUSY_MODEL = """
import threading

RELEASE = threading.Event()


class Model:
    def is_healthy(self):
        return True

    async def predict(self, model_input):  # async: every hook thread is taken
        RELEASE.set()
        return {"released": True}

    def chat_completions(self, model_input):
        RELEASE.wait(30)
        return {"done": True}
"""


def write(tmp_path: Path, source: str, config: str) -> Path:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.py").write_text(source)
    (tmp_path / "config.yaml").write_text(config)
    return tmp_path


def test_a_504_sets_the_hooks_disconnect_event_and_frees_its_slot(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    config = "runtime:\n  request_timeout: 1\n  predict_concurrency: 1\n"
    server = start_server(write(tmp_path, WATCHING_MODEL, config))
    timed_out = httpx.post(server.url("/predict"), json={"wait": True}, timeout=30)
    assert timed_out.status_code == 504 and timed_out.json()["error"]
    started = time.monotonic()
    after = httpx.post(server.url("/predict"), json={}, timeout=30)
    assert after.status_code == 200 and time.monotonic() - started < 5


def test_readiness_answers_while_every_hook_thread_is_busy(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = start_server(write(tmp_path, BUSY_MODEL, "runtime:\n  predict_concurrency: 1\n"))
    with httpx.Client(timeout=40, limits=httpx.Limits(max_connections=100)) as client:
        busy = [
            threading.Thread(
                target=client.post, args=(server.url("/v1/chat/completions"),), kwargs={"json": {}}
            )
            for _ in range(80)
        ]
        for thread in busy:
            thread.start()
        time.sleep(1.0)  # the 80 hooks now wait in their threads
        try:
            started = time.monotonic()
            assert client.get(server.url("/v1/models/model"), timeout=5).status_code == 200
            assert time.monotonic() - started < 1.0
        finally:
            client.post(server.url("/predict"), json={})
            for thread in busy:
                thread.join(40)
