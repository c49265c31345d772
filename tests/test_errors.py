"""Every error status of the contract, as JSON {"error": ...}."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from kingpost.testing import InProcessServer
from tests.conftest import MODELS


@pytest.fixture(scope="module")
def server() -> Iterator[InProcessServer]:
    with InProcessServer(MODELS / "errors") as server:
        yield server


def post(server: InProcessServer, payload: object, **kwargs: object) -> httpx.Response:
    return server.client.post("/predict", json=payload, timeout=10, **kwargs)  # type: ignore[arg-type]


def test_invalid_json_is_400(server: InProcessServer) -> None:
    reply = server.client.post("/predict", content=b"{not json")
    assert reply.status_code == 400
    assert "not valid JSON" in reply.json()["error"]


def test_wrong_method_is_405_with_allow(server: InProcessServer) -> None:
    reply = server.client.get("/predict")
    assert reply.status_code == 405
    assert reply.headers["allow"] == "POST"
    assert "error" in reply.json()


def test_unknown_route_is_404_json(server: InProcessServer) -> None:
    reply = server.client.get("/no/such/route")
    assert reply.status_code == 404
    assert "error" in reply.json()


def test_body_over_the_limit_is_413(server: InProcessServer) -> None:
    reply = post(server, {"kind": "echo", "pad": "x" * 2000})
    assert reply.status_code == 413
    assert "limit" in reply.json()["error"]


def test_chunked_body_over_the_limit_is_413(server: InProcessServer) -> None:
    def body() -> Iterator[bytes]:
        for _ in range(20):
            yield b"x" * 100

    reply = server.client.post("/predict", content=body())
    assert reply.status_code == 413


def test_model_exception_is_a_generic_500_and_logged(server: InProcessServer) -> None:
    reply = post(server, {"kind": "value_error"})
    assert reply.status_code == 500
    assert reply.json() == {"error": "Internal Server Error"}
    assert "secret internal detail" not in reply.text
    request_id = reply.headers["x-request-id"]
    logs = server.logs()
    assert f"[{request_id}]" in logs
    assert "ValueError: secret internal detail" in logs
    assert "model.py" in logs


def test_http_exception_passes_through(server: InProcessServer) -> None:
    reply = post(server, {"kind": "http_exception"})
    assert reply.status_code == 418
    assert reply.json() == {"error": "I am a teapot"}


def test_returned_responses_are_sent_as_they_are(server: InProcessServer) -> None:
    plain = post(server, {"kind": "response"})
    assert (plain.status_code, plain.text, plain.headers["x-model"]) == (201, "plain words", "yes")
    assert plain.headers["x-request-id"]
    assert post(server, {"kind": "json_response"}).status_code == 202
    streamed = post(server, {"kind": "streaming_response"})
    assert streamed.text == "part0\npart1\npart2\n"


def test_numpy_values_become_json(server: InProcessServer) -> None:
    assert post(server, {"kind": "numpy"}).json() == {"array": [0, 1, 2], "scalar": 1.5}


def test_request_past_the_timeout_is_504(server: InProcessServer) -> None:
    reply = post(server, {"kind": "slow"})
    assert reply.status_code == 504
    assert "timeout" in reply.json()["error"]


def test_the_server_keeps_serving_after_errors(server: InProcessServer) -> None:
    for kind in ("value_error", "http_exception", "slow"):
        post(server, {"kind": kind})
    assert post(server, {"kind": "echo"}).json() == {"kind": "echo"}


def test_dev_mode_puts_the_exception_in_the_body(start_in_process) -> None:
    dev = start_in_process(MODELS / "errors", "--dev")
    body = post(dev, {"kind": "value_error"}).json()
    assert body["type"] == "ValueError"
    assert body["message"] == "secret internal detail"
    assert any("model.py" in frame for frame in body["traceback"])
