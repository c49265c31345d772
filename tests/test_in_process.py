"""kingpost.testing.InProcessServer: the app ``kingpost serve`` builds, run with no socket."""

from __future__ import annotations

import os
import sys

import anthropic
import openai
import pytest

from kingpost.testing import InProcessServer
from tests.conftest import EXAMPLES, MODELS


async def test_async_with_runs_the_app_on_the_callers_loop() -> None:
    async with InProcessServer(MODELS / "sync_echo") as server:
        reply = await server.async_client.post("/predict", json={"a": 1})
        assert reply.json() == {"echo": {"a": 1}}
        assert reply.headers["x-request-id"]


async def test_the_async_sdks_reach_the_app() -> None:
    async with InProcessServer(EXAMPLES / "openai-compatible") as server:
        chat = openai.AsyncOpenAI(
            base_url=server.url("/v1"), api_key="-", http_client=server.async_sdk_client
        )
        reply = await chat.chat.completions.create(
            model="parrot", messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.choices[0].message.content == "You said: hi "
        messages = anthropic.AsyncAnthropic(
            base_url=server.url(""), api_key="-", http_client=server.async_sdk_client
        )
        stream = await messages.messages.create(
            model="parrot",
            max_tokens=20,
            messages=[{"role": "user", "content": "hello"}],
            stream=True,
        )
        kinds = [event.type async for event in stream]
        assert kinds[0] == "message_start" and kinds[-1] == "message_stop"


def test_a_model_that_fails_to_load_is_an_error_naming_the_exit_code() -> None:
    with pytest.raises(RuntimeError, match=r"(?s)exit code 3\).*weights are corrupt"):
        InProcessServer(MODELS / "load_failure").start()


def test_the_environment_and_import_path_are_restored_after_it() -> None:
    environ, path = dict(os.environ), list(sys.path)
    with InProcessServer(MODELS / "secrets_env", env={"KINGPOST_IN_PROCESS": "1"}) as server:
        assert os.environ["KINGPOST_IN_PROCESS"] == "1"
        assert server.client.get("/v1/models/model").status_code == 200
    assert dict(os.environ) == environ
    assert sys.path == path


def test_the_logs_are_the_servers_lines_without_the_clients() -> None:
    with InProcessServer(MODELS / "sync_echo") as server:
        server.client.post("/predict", json={}, headers={"x-request-id": "r-1"})
    assert "[r-1] kingpost.access: POST /predict 200" in server.logs()
    assert "httpx" not in server.logs()


def test_watch_and_workers_are_refused_for_a_real_process() -> None:
    for args in (["--watch"], ["--workers", "2"]):
        with pytest.raises(ValueError, match="ServerProcess"):
            InProcessServer(MODELS / "sync_echo", *args)
