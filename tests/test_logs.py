"""Logs: JSON access lines with --log-format json; health routes stay out of them."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from kingpost.testing import ServerProcess
from tests.conftest import MODELS

Start = Callable[..., ServerProcess]


def json_lines(server: ServerProcess) -> list[dict[str, Any]]:
    lines = []
    for line in server.logs().splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def access_lines(server: ServerProcess) -> list[dict[str, Any]]:
    return [entry for entry in json_lines(server) if entry["logger"] == "kingpost.access"]


def wait_for_access_lines(server: ServerProcess, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 5
    while len(lines := access_lines(server)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return lines


def test_every_log_line_is_json(start_server: Start) -> None:
    server = start_server(MODELS / "sync_echo", "--log-format", "json")
    httpx.post(server.url("/predict"), json={})
    wait_for_access_lines(server, 1)
    entries = json_lines(server)
    assert entries
    assert len(entries) == len(server.logs().strip().splitlines())
    assert all({"time", "level", "logger", "message", "request_id"} <= set(e) for e in entries)


def test_an_access_line_has_request_id_route_status_and_latency(start_server: Start) -> None:
    server = start_server(MODELS / "sync_echo", "--log-format", "json")
    httpx.post(server.url("/predict"), json={}, headers={"x-request-id": "req-42"})
    httpx.post(server.url("/v1/chat/completions"), json={})
    first, second = wait_for_access_lines(server, 2)
    assert first["request_id"] == "req-42"
    assert (first["route"], first["status"]) == ("predict", 200)
    assert isinstance(first["latency_ms"], float) and first["latency_ms"] >= 0
    assert (second["route"], second["status"]) == ("chat_completions", 404)
    assert second["request_id"] != "req-42"


def test_health_and_metrics_routes_are_not_logged(start_server: Start) -> None:
    server = start_server(MODELS / "sync_echo", "--log-format", "json")
    for path in ("/", "/v1/models/model", "/ping", "/metrics"):
        assert httpx.get(server.url(path)).status_code == 200
    httpx.post(server.url("/predict"), json={})
    assert [entry["route"] for entry in wait_for_access_lines(server, 1)] == ["predict"]


def test_a_model_error_is_logged_with_the_request_id(start_server: Start) -> None:
    server = start_server(MODELS / "errors", "--log-format", "json")
    headers = {"x-request-id": "broken-1"}
    httpx.post(server.url("/predict"), json={"kind": "value_error"}, headers=headers)
    wait_for_access_lines(server, 1)
    errors = [e for e in json_lines(server) if e["level"] == "ERROR"]
    assert errors and errors[0]["request_id"] == "broken-1"
    assert "secret internal detail" in errors[0]["message"]


def test_text_lines_carry_the_request_id(start_server: Start) -> None:
    server = start_server(MODELS / "sync_echo")
    httpx.post(server.url("/predict"), json={}, headers={"x-request-id": "plain-7"})
    deadline = time.monotonic() + 5
    while "[plain-7]" not in server.logs() and time.monotonic() < deadline:
        time.sleep(0.05)
    line = next(line for line in server.logs().splitlines() if "[plain-7]" in line)
    assert "POST /predict 200" in line


def test_dev_mode_bodies_carry_only_the_models_own_frames(start_server: Start) -> None:
    server = start_server(MODELS / "errors", "--dev")
    body = httpx.post(server.url("/predict"), json={"kind": "value_error"}).json()
    assert body["error"] == "ValueError: secret internal detail"
    assert body["traceback"]
    assert all(str(MODELS / "errors") in frame for frame in body["traceback"])
    assert not any("kingpost/" in frame for frame in body["traceback"])


def test_enable_debug_logs_shows_the_models_debug_lines(
    start_server: Start, tmp_path: Path
) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "config.yaml").write_text("runtime:\n  enable_debug_logs: true\n")
    (tmp_path / "model" / "model.py").write_text(
        "import logging\n\n\n"
        "class Model:\n"
        "    def predict(self, model_input):\n"
        "        logging.getLogger('my.model').debug('looking closely at %s', model_input)\n"
        "        return 1\n"
    )
    server = start_server(tmp_path)
    httpx.post(server.url("/predict"), json={"x": 1})
    deadline = time.monotonic() + 5
    while "looking closely at {'x': 1}" not in server.logs():
        assert time.monotonic() < deadline, server.logs()
        time.sleep(0.05)


def test_access_lines_are_written_whole_in_the_text_format(tmp_path: Path) -> None:
    import logging

    from kingpost.logs import AccessLog

    target = tmp_path / "access.log"
    logging.getLogger("kingpost.access").setLevel(logging.INFO)
    try:
        with target.open("wb") as sink:
            AccessLog("text", sink.fileno()).write("POST", "/predict", 200, 0.0123, "predict", "r1")
    finally:
        logging.getLogger("kingpost.access").setLevel(logging.NOTSET)
    line = target.read_text()
    assert line.endswith(" INFO  [r1] kingpost.access: POST /predict 200 12.3ms\n")
    assert line.count("\n") == 1
