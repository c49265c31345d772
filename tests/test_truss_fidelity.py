"""What Truss's server tests assert, replayed on Truss-style model directories run unmodified."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgpack
import orjson
import pytest
from starlette.testclient import TestClient

from kingpost.server.app import ServerApp
from kingpost.server.probes import Metrics
from kingpost.server.routing import Route, Router
from kingpost.testing import ServerProcess

COMPAT = Path(__file__).resolve().parent / "models" / "truss_compat"
NAMED = COMPAT / "named_basic"  # config.yaml: model_name: x-4


@pytest.fixture(scope="module")
def named() -> Iterator[ServerProcess]:
    with ServerProcess(NAMED) as server:
        yield server


@pytest.fixture(scope="module")
def named_json_logs() -> Iterator[ServerProcess]:
    with ServerProcess(NAMED, "--log-format", "json") as server:
        yield server


def error_lines(server: ServerProcess, since: int) -> list[str]:
    return [line for line in server.logs()[since:].splitlines() if " ERROR " in line]


# -- any model name -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["x-4", "model", "any_other-name"])
def test_every_v1_models_route_answers_for_any_model_name(named: ServerProcess, name: str) -> None:
    assert httpx.get(named.url(f"/v1/models/{name}")).status_code == 200
    assert httpx.get(named.url(f"/v1/models/{name}/loaded")).status_code == 200
    predicted = httpx.post(named.url(f"/v1/models/{name}:predict"), json={"prompt": "value"})
    assert predicted.json() == {"prompt": "value"}


def test_predict_binary_takes_and_answers_msgpack(named: ServerProcess) -> None:
    response = httpx.post(
        named.url("/v1/models/x-4:predict_binary"),
        content=msgpack.packb({"bytes": b"\x00\x01"}),
        headers={"content-type": "application/octet-stream"},
    )
    assert response.status_code == 200
    assert msgpack.unpackb(response.content) == {"bytes": b"\x00\x01"}


@pytest.mark.parametrize(
    "content_type", ["Application/Octet-Stream", "application/octet-stream; charset=binary"]
)
def test_octet_stream_is_msgpack_whatever_its_case_and_parameters(
    named: ServerProcess, content_type: str
) -> None:
    response = httpx.post(
        named.url("/predict"),
        content=msgpack.packb([1, "two"]),
        headers={"content-type": content_type},
    )
    assert response.status_code == 200
    assert msgpack.unpackb(response.content) == [1, "two"]


def test_json_with_a_charset_and_capitals_is_json(named: ServerProcess) -> None:
    response = httpx.post(
        named.url("/predict"),
        content=b'{"a": 1}',
        headers={"content-type": "Application/JSON; charset=utf-8"},
    )
    assert response.json() == {"a": 1}


# -- platform headers -----------------------------------------------------------------


def test_every_response_carries_the_request_id_under_both_names(named: ServerProcess) -> None:
    for response in (
        httpx.post(named.url("/predict"), json=1),
        httpx.get(named.url("/v1/models/x-4")),
        httpx.get(named.url("/no/such/route")),
    ):
        assert response.headers["x-baseten-request-id"] == response.headers["x-request-id"]


def test_a_model_error_is_marked_as_the_model_servers_600(named: ServerProcess) -> None:
    response = httpx.post(named.url("/predict"), json={"fail": "bad weights"})
    assert response.status_code == 500
    assert "Internal Server Error" in response.json()["error"]
    assert response.headers["x-baseten-error-source"] == "04"
    assert response.headers["x-baseten-error-code"] == "600"


def test_a_client_error_is_marked_700(named: ServerProcess) -> None:
    response = httpx.post(named.url("/predict"), content=b"{not json")
    assert response.status_code == 400
    assert response.headers["x-baseten-error-source"] == "04"
    assert response.headers["x-baseten-error-code"] == "700"


def test_a_successful_reply_carries_no_error_headers(named: ServerProcess) -> None:
    response = httpx.post(named.url("/predict"), json=[])
    assert "x-baseten-error-code" not in response.headers


def test_the_schema_of_an_untyped_model_is_no_schema_found(named: ServerProcess) -> None:
    response = httpx.get(named.url("/v1/models/x-4/schema"))
    assert response.status_code == 404
    assert response.json()["error"] == "No schema found"
    assert response.headers["x-baseten-error-source"] == "04"
    assert response.headers["x-baseten-error-code"] == "600"


def test_health_answers_like_readiness(named: ServerProcess) -> None:
    assert httpx.get(named.url("/health")).status_code == 200


# -- what goes to the log -------------------------------------------------------------


def test_a_failed_request_logs_its_traceback_from_the_models_frames(
    named: ServerProcess,
) -> None:
    since = len(named.logs())
    httpx.post(named.url("/predict"), json={"fail": "traceback please"})
    logged = named.wait_for_log(r"ValueError: traceback please").string[since:]
    assert "Traceback (most recent call last):" in logged
    assert 'model.py", line' in logged and "in _fail" in logged
    assert "kingpost/server" not in logged


def test_a_failed_stream_is_logged_once_with_the_models_frames(named: ServerProcess) -> None:
    since = len(named.logs())
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream("POST", named.url("/predict"), json={"fail_streaming": "mid-way"}) as r,
    ):
        for _ in r.iter_raw():
            pass
    named.wait_for_log(r"ValueError: mid-way")
    lines = error_lines(named, since)
    assert len(lines) == 1, lines
    logged = named.logs()[since:]
    assert "ASGI callable returned without completing response" not in logged
    assert "Traceback (most recent call last):" in logged
    assert "in _stream_then_fail" in logged and "kingpost/server" not in logged


def json_entries(server: ServerProcess, since: int) -> list[dict[str, object]]:
    entries = []
    for line in server.logs()[since:].splitlines():
        if line.startswith("{"):
            entries.append(orjson.loads(line))
    return entries


@pytest.mark.parametrize(
    ("body", "frame"),
    [({"fail": "in json"}, "in _fail"), ({"fail_streaming": "in json"}, "in _stream_then_fail")],
)
def test_json_logs_put_the_traceback_in_one_exception_field(
    named_json_logs: ServerProcess, body: dict[str, str], frame: str
) -> None:
    server = named_json_logs
    since = len(server.logs())
    with contextlib.suppress(httpx.RemoteProtocolError):  # the failed stream
        httpx.post(server.url("/predict"), json=body)
    server.wait_for_log(r"ValueError: in json")
    errors = [e for e in json_entries(server, since) if e.get("level") == "ERROR"]
    assert len(errors) == 1, errors
    exception = str(errors[0]["exception"])
    assert exception.startswith("Traceback (most recent call last):")
    assert frame in exception and exception.rstrip().endswith("ValueError: in json")


# -- streams --------------------------------------------------------------------------


def test_a_stream_past_its_read_timeout_ends_as_a_failure_with_one_error_line() -> None:
    with ServerProcess(COMPAT / "streaming_read_timeout") as server:
        since = len(server.logs())
        received = []
        started = time.monotonic()
        with (
            pytest.raises(httpx.RemoteProtocolError),
            httpx.stream("POST", server.url("/predict"), json={}, timeout=10) as response,
        ):
            assert response.status_code == 200
            for chunk in response.iter_raw():
                received.append(chunk)
        assert b"".join(received) == b"first;"
        assert time.monotonic() - started < 2.8
        server.wait_for_log("streaming_read_timeout")
        lines = error_lines(server, since)
        assert len(lines) == 1 and "streaming_read_timeout" in lines[0], lines
        assert "ASGI callable returned" not in server.logs()[since:]


def test_the_read_timeout_applies_to_the_first_chunk_too() -> None:
    with ServerProcess(COMPAT / "streaming_slow_start") as server:
        started = time.monotonic()
        response = httpx.post(server.url("/predict"), json={}, timeout=10)
        assert response.status_code == 504
        assert time.monotonic() - started < 2.8
        assert response.headers["x-baseten-error-code"] == "600"


# -- load -----------------------------------------------------------------------------


def test_a_failing_load_is_retried_once_after_a_second() -> None:
    with ServerProcess(COMPAT / "load_retry") as server:
        assert httpx.post(server.url("/predict"), json={}).json() == {"load_attempts": 2}
        logs = server.logs()
    assert "Simulated error: the first load fails" in logs
    assert "retrying load" in logs


def test_a_load_that_keeps_failing_exits_after_the_configured_retries() -> None:
    command = [sys.executable, "-m", "kingpost", "serve", str(COMPAT / "load_failure")]
    started = time.monotonic()
    result = subprocess.run(
        [*command, "--port", "0", "--load-retries", "2", "--load-retry-delay", "0.1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert result.stderr.count("weights are corrupt: cannot load") >= 3
    assert result.stderr.count("retrying load") == 2
    assert time.monotonic() - started < 30


def test_an_exception_from_the_server_itself_is_marked_500() -> None:
    broken = Metrics(None)  # type: ignore[arg-type]  # its render() fails inside the server
    app = ServerApp(Router([Route("/broken", broken)]))
    with TestClient(app, raise_server_exceptions=False) as client:  # type: ignore[arg-type]
        response = client.get("/broken")
    assert response.status_code == 500
    assert response.headers["x-baseten-error-source"] == "04"
    assert response.headers["x-baseten-error-code"] == "500"
