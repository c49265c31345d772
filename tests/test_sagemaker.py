"""SageMaker's container contract: GET /ping for health, POST /invocations for predict."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from kingpost.testing import InProcessServer
from tests.conftest import MODELS


def test_invocations_runs_the_predict_pipeline(
    start_in_process: Callable[..., InProcessServer],
) -> None:
    server = start_in_process(MODELS / "sync_echo")
    response = server.client.post("/invocations", json={"a": 1})
    assert response.json() == {"echo": {"a": 1}}
    assert server.client.get("/invocations").status_code == 405


def test_ping_answers_503_while_loading_then_200(
    start_in_process: Callable[..., InProcessServer], tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    server = start_in_process(MODELS / "slow_load", wait_ready=False, env={"LOAD_GATE": str(gate)})
    assert server.client.get("/ping").status_code == 503
    gate.touch()
    server.wait_until("/ping", 30)
    assert server.client.get("/ping").status_code == 200
