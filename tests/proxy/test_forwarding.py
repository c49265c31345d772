"""Requests to Kingpost reach the custom server unchanged, and its replies come back."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.proxy.custom_servers import FastAPIServer, FastAPIServers


@pytest.fixture(scope="module")
def server(shared_fastapi_servers: FastAPIServers) -> FastAPIServer:
    return shared_fastapi_servers.start(runtime={"max_request_bytes": 4 * 1024 * 1024})


@pytest.fixture
def client(server: FastAPIServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.kingpost.base_url, timeout=30) as client:
        yield client


def test_predict_goes_to_the_predict_endpoint(client: httpx.Client) -> None:
    for path in ("/predict", "/v1/models/model:predict", "/environments/production/predict"):
        response = client.post(path, json={"x": 1})
        assert response.status_code == 200
        assert response.json()["echo"] == {"x": 1}


def test_other_paths_are_forwarded_with_method_query_headers_and_body(
    client: httpx.Client,
) -> None:
    response = client.request(
        "PATCH",
        "/echo/a%2Fb/c",
        params={"q": "1", "r": "two words"},
        headers={
            "x-custom": "kept",
            "x-hop": "dropped",
            "connection": "keep-alive, x-hop",
            "te": "trailers",
        },
        content=b"patch body",
    )
    assert response.status_code == 200
    seen = response.json()
    assert seen["method"] == "PATCH"
    assert seen["raw_path"] == "/echo/a%2Fb/c"
    assert seen["query"] == "q=1&r=two+words"
    assert seen["body"] == "patch body"
    headers = dict(seen["headers"])
    assert headers["x-custom"] == "kept"
    assert "te" not in headers
    assert "x-hop" not in headers  # named in Connection: meant for the first hop only


def test_sync_paths_of_the_platform_grammar_are_forwarded_unchanged(client: httpx.Client) -> None:
    for prefix in ("/environments/staging", "/production", "/deployment/abc123"):
        response = client.put(f"{prefix}/sync/echo/items?id=7", content=b"{}")
        assert response.status_code == 200
        assert response.json()["path"] == "/echo/items"
        assert response.json()["query"] == "id=7"


def test_the_request_id_is_shared_with_the_server_and_returned(client: httpx.Client) -> None:
    response = client.get("/echo/id", headers={"x-request-id": "trace-42"})
    assert response.headers["x-request-id"] == "trace-42"
    assert dict(response.json()["headers"])["x-request-id"] == "trace-42"

    generated = client.get("/echo/id")
    request_id = generated.headers["x-request-id"]
    assert request_id
    assert dict(generated.json()["headers"])["x-request-id"] == request_id


def test_statuses_and_error_bodies_of_the_server_are_passed_through(client: httpx.Client) -> None:
    response = client.get("/status/418")
    assert response.status_code == 418
    assert response.json() == {"detail": "asked for 418"}
    assert client.get("/no/such/route").status_code == 404


def test_liveness_and_readiness_go_to_their_endpoints(client: httpx.Client) -> None:
    assert client.get("/").json() == {"alive": "yes"}
    assert client.get("/v1/models/model").json() == {"ok": True}
    assert client.get("/v1/models/model/loaded").status_code == 200


def test_large_request_bodies_are_streamed_to_the_server(client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        for i in range(48):
            yield bytes([i]) * 65536

    expected = hashlib.sha256(b"".join(chunks())).hexdigest()
    response = client.post("/upload", content=chunks())
    assert response.status_code == 200
    assert response.json()["size"] == 48 * 65536
    assert response.json()["sha256"] == expected
    assert response.json()["chunks"] > 1


def test_large_response_bodies_arrive_whole(client: httpx.Client) -> None:
    response = client.get("/download", params={"size": 20_000_000})
    assert response.status_code == 200
    assert len(response.content) == 20_000_000


def test_a_body_over_the_limit_is_refused_with_413(client: httpx.Client) -> None:
    response = client.post("/upload", content=b"x" * (5 * 1024 * 1024))
    assert response.status_code == 413
    assert "limit" in response.json()["error"]


def test_a_streamed_body_over_the_limit_is_refused_with_413(client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(80):
            yield b"y" * 65536

    response = client.post("/upload", content=chunks())
    assert response.status_code == 413


def test_server_sent_events_arrive_one_by_one(client: httpx.Client) -> None:
    arrivals: list[tuple[float, str]] = []
    started = time.monotonic()
    with client.stream(
        "GET", "/environments/production/sync/events", params={"n": 4, "delay": 0.4}
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data:"):
                arrivals.append((time.monotonic() - started, line))
    assert [line for _, line in arrivals] == ["data: 0", "data: 1", "data: 2", "data: 3"]
    # Each event comes when the server writes it, not when the stream ends.
    assert arrivals[0][0] < 1.0
    assert arrivals[-1][0] - arrivals[0][0] > 1.0


def test_a_client_leaving_a_stream_closes_the_upstream_request(
    server: FastAPIServer, client: httpx.Client
) -> None:
    with client.stream("GET", "/forever") as response:
        for line in response.iter_lines():
            if line.startswith("data:"):
                break
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if client.get("/stream-cancellations").json()["count"] == 1:
            return
        time.sleep(0.1)
    pytest.fail("the server's stream was not cancelled after the client left")


def test_a_client_leaving_before_the_reply_closes_the_upstream_request(
    server: FastAPIServer, client: httpx.Client
) -> None:
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(server.url("/until-disconnected"), timeout=0.5)
    deadline = time.monotonic() + 5
    while client.get("/disconnects-seen").json()["count"] != 1:
        assert time.monotonic() < deadline, "the server never saw the request go away"
        time.sleep(0.1)


def test_a_request_past_the_request_timeout_gets_504(
    start_fastapi_server: Callable[..., FastAPIServer],
) -> None:
    server = start_fastapi_server(runtime={"request_timeout": 1})
    response = httpx.get(server.url("/slow"), params={"seconds": 5}, timeout=10)
    assert response.status_code == 504
    assert "timeout" in response.json()["error"]


def test_a_stream_silent_past_the_streaming_read_timeout_is_cut_short(
    start_fastapi_server: Callable[..., FastAPIServer],
) -> None:
    server = start_fastapi_server(runtime={"streaming_read_timeout": 1})
    lines = []
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream("GET", server.url("/events"), params={"n": 3, "delay": 3}) as response,
    ):
        for line in response.iter_lines():
            lines.append(line)
    assert "data: 0" in lines
    assert "data: 1" not in lines
    assert "streaming_read_timeout" in server.kingpost.logs()


def test_forwarded_requests_are_counted_in_metrics_and_logged(
    server: FastAPIServer, client: httpx.Client
) -> None:
    client.get("/echo/counted", headers={"x-request-id": "logged-id"})
    metrics = client.get("/metrics").text
    assert 'kingpost_requests_total{route="forward",status="200"}' in metrics
    deadline = time.monotonic() + 5
    while "GET /echo/counted 200" not in server.kingpost.logs():
        assert time.monotonic() < deadline, server.kingpost.logs()
        time.sleep(0.1)
    line = next(x for x in server.kingpost.logs().splitlines() if "GET /echo/counted 200" in x)
    assert "[logged-id]" in line


@pytest.mark.parametrize("path", ["/v1/websocket", "/environments/production/websocket"])
def test_websockets_are_relayed_to_the_predict_endpoint(server: FastAPIServer, path: str) -> None:
    async def talk() -> None:
        url = server.kingpost.base_url.replace("http", "ws") + path + "?name=ada"
        async with connect(url, additional_headers={"x-request-id": "ws-1"}) as ws:
            assert await ws.recv() == "hello ada ws-1"
            await ws.send("ping")
            assert await ws.recv() == "echo: ping"
            await ws.send(b"\x01\x02\x03")
            assert await ws.recv() == b"\x03\x02\x01"
            await ws.send("bye")
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 4001
            assert ws.close_reason == "asked to leave"

    asyncio.run(talk())
