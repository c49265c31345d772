"""SageMaker's container contract: GET /ping for health, POST /invocations for predict."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from kingpost.testing import ServerProcess
from tests.conftest import MODELS


def test_invocations_runs_the_predict_pipeline(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(MODELS / "sync_echo")
    response = httpx.post(server.url("/invocations"), json={"a": 1})
    assert response.json() == {"echo": {"a": 1}}
    assert httpx.get(server.url("/invocations")).status_code == 405


def test_ping_answers_503_while_loading_then_200(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    server = start_server(MODELS / "slow_load", wait_ready=False, env={"LOAD_GATE": str(gate)})
    assert httpx.get(server.url("/ping")).status_code == 503
    gate.touch()
    server.wait_until("/ping", 30)
    assert httpx.get(server.url("/ping")).status_code == 200
