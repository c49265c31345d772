"""Nothing a client sends takes the server down: each bad request gets a clear error."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from kingpost.testing import ServerProcess
from tests.conftest import EXAMPLES

BAD_BODIES = [
    b"",
    b"{",
    b"\xff\xfe\x00garbage",
    b"[" * 5000 + b"]" * 5000,
    b'{"a": NaN}',
    b'"\\ud800"',
]


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with ServerProcess(EXAMPLES / "openai-compatible") as server:
        yield server


@pytest.mark.parametrize("body", BAD_BODIES, ids=range(len(BAD_BODIES)))
@pytest.mark.parametrize("path", ["/predict", "/v1/chat/completions"])
def test_malformed_json_is_400(server: ServerProcess, path: str, body: bytes) -> None:
    reply = httpx.post(server.url(path), content=body, headers={"content-type": "application/json"})
    assert reply.status_code == 400
    error = reply.json()["error"]
    if path.startswith("/v1/"):  # OpenAI's error object on the OpenAI routes
        assert error["type"] == "invalid_request_error"
        error = error["message"]
    assert error.startswith("request body is not valid JSON")


def test_garbage_msgpack_is_400(server: ServerProcess) -> None:
    reply = httpx.post(
        server.url("/predict"),
        content=b"\xc1\xc1\xc1",
        headers={"content-type": "application/octet-stream"},
    )
    assert reply.status_code == 400
    assert "msgpack" in reply.json()["error"]


def test_a_lying_content_length_is_refused_without_reading(server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-length: 999999999999\r\n\r\n{}")
        head = sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 413")


def test_unparseable_http_is_dropped_and_the_server_lives_on(server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"\x16\x03\x01 this is not http\r\n\r\n")
        sock.recv(4096)
    assert httpx.get(server.url("/")).status_code == 200


def test_a_model_that_chokes_on_odd_input_answers_500_and_keeps_serving(
    server: ServerProcess,
) -> None:
    # The example expects "messages" to be a list; a number makes it raise.
    reply = httpx.post(server.url("/v1/messages"), json={"messages": 5})
    assert reply.status_code == 500
    assert httpx.post(server.url("/predict"), json={"ok": 1}).json() == {"echo": {"ok": 1}}
