"""Generators stream as they are produced; failures end only their own stream."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from kingpost.testing import ServerProcess
from tests.conftest import MODELS


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with ServerProcess(MODELS / "streams") as server:
        yield server


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_generators_stream_every_chunk(server: ServerProcess, mode: str) -> None:
    reply = httpx.post(server.url("/predict"), json={"mode": mode, "count": 50})
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/octet-stream"
    assert reply.text == "".join(f"chunk-{i};" for i in range(50))


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_the_first_chunk_arrives_while_the_generator_still_runs(
    server: ServerProcess, mode: str
) -> None:
    payload = {"mode": mode, "count": 6, "delay": 0.3}
    started = time.monotonic()
    with httpx.stream("POST", server.url("/predict"), json=payload, timeout=10) as reply:
        chunks = reply.iter_raw()
        first = next(chunks)
        first_at = time.monotonic() - started
        rest = b"".join(chunks)
        done_at = time.monotonic() - started
    assert first.startswith(b"chunk-0;")
    assert first_at < done_at - 0.6  # the first chunk came well before the end
    assert (first + rest).count(b";") == 6


def test_accept_json_gathers_predict_streams(server: ServerProcess) -> None:
    reply = httpx.post(
        server.url("/predict"), json={"count": 3}, headers={"accept": "application/json"}
    )
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == "chunk-0;chunk-1;chunk-2;"


def test_v1_streams_are_event_streams_even_when_json_is_accepted(server: ServerProcess) -> None:
    reply = httpx.post(
        server.url("/v1/chat/completions"),
        json={"count": 2},
        headers={"accept": "application/json"},
    )
    assert reply.headers["content-type"] == "text/event-stream"
    assert reply.text == "data: 0\n\ndata: 1\n\ndata: [DONE]\n\n"


def test_a_failure_before_the_first_chunk_is_a_500(server: ServerProcess) -> None:
    reply = httpx.post(server.url("/predict"), json={"mode": "fail_first"})
    assert reply.status_code == 500
    assert reply.json() == {"error": "Internal Server Error"}


def test_a_failure_mid_stream_cuts_that_stream_only(server: ServerProcess) -> None:
    received = b""
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream("POST", server.url("/predict"), json={"mode": "fail_midway"}) as reply,
    ):
        for chunk in reply.iter_raw():
            received += chunk
    # The client got what was produced, then an incomplete response (not a clean end).
    assert received == b"chunk-0;chunk-1;"
    assert httpx.post(server.url("/predict"), json={"count": 1}).text == "chunk-0;"
    assert "the model broke mid-stream" in server.logs()


def test_streaming_read_timeout_ends_a_stalled_stream_as_a_failure(server: ServerProcess) -> None:
    started = time.monotonic()
    received = []
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream("POST", server.url("/predict"), json={"mode": "stall"}, timeout=20) as reply,
    ):
        received.extend(reply.iter_raw())
    assert b"".join(received) == b"first;"
    assert time.monotonic() - started < 10
    assert "streaming_read_timeout" in server.logs()
