"""Model directories written the way Truss's own test models are, served unmodified."""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from kingpost.testing import ServerProcess

COMPAT = Path(__file__).resolve().parent / "models" / "truss_compat"

Start = Callable[..., ServerProcess]


def serve(start_server: Start, name: str, *args: str, **kwargs: object) -> ServerProcess:
    return start_server(COMPAT / name, *args, **kwargs)


def test_a_generator_returned_by_predict_is_streamed_chunk_by_chunk(start_server: Start) -> None:
    server = serve(start_server, "streaming_generator")
    arrivals = []
    with httpx.stream(
        "POST", server.url("/predict"), json={"count": 4, "delay": 0.2}, timeout=10
    ) as response:
        assert response.status_code == 200
        for chunk in response.iter_raw():
            arrivals.append((time.monotonic(), chunk))
    assert b"".join(chunk for _, chunk in arrivals) == b"0123"
    assert arrivals[-1][0] - arrivals[0][0] > 0.4  # not buffered until the end


def test_a_streamed_predict_is_gathered_when_the_client_accepts_json(start_server: Start) -> None:
    server = serve(start_server, "streaming_generator")
    response = httpx.post(
        server.url("/predict"), json={"count": 3}, headers={"accept": "application/json"}
    )
    assert response.json() == "012"


def test_an_async_generator_predict_streams(start_server: Start) -> None:
    server = serve(start_server, "streaming_async_generator")
    response = httpx.post(server.url("/predict"), json={"words": ["a", "b"]})
    assert response.status_code == 200
    assert response.text == "a\nb\n"


def test_a_stream_ends_when_no_chunk_comes_within_the_read_timeout(start_server: Start) -> None:
    server = serve(start_server, "streaming_read_timeout")
    started = time.monotonic()
    response = httpx.post(server.url("/predict"), json={}, timeout=10)
    assert response.text == "first;"
    assert time.monotonic() - started < 2.5


def test_an_error_mid_stream_ends_the_stream_and_the_server_keeps_serving(
    start_server: Start,
) -> None:
    server = serve(start_server, "streaming_with_error")
    received = []
    # The response is left incomplete, so the client can tell a failure from an end.
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream("POST", server.url("/predict"), json={"fail": True}) as response,
    ):
        assert response.status_code == 200
        for chunk in response.iter_raw():
            received.append(chunk)
    assert b"".join(received) == b"one;two;"
    assert httpx.post(server.url("/predict"), json={"fail": False}).text == "one;two;three;"
    assert "the generator broke after two chunks" in server.logs()


def test_pydantic_input_is_validated_and_the_output_serialised(start_server: Start) -> None:
    server = serve(start_server, "pydantic_typed_io")
    ok = httpx.post(server.url("/predict"), json={"prompt": "hi", "repeat": 2})
    assert ok.json() == {"texts": ["> hi", "> hi"], "total_length": 8}
    bad = httpx.post(server.url("/predict"), json={"prompt": "hi", "repeat": 99})
    assert bad.status_code == 400
    assert "repeat" in bad.json()["error"]
    missing = httpx.post(server.url("/predict"), json={})
    assert missing.status_code == 400
    assert "prompt" in missing.json()["error"]


def test_the_schema_of_a_typed_model_is_served(start_server: Start) -> None:
    server = serve(start_server, "pydantic_typed_io")
    schema = httpx.get(server.url("/v1/models/model/schema")).json()
    assert schema["input_schema"]["required"] == ["prompt"]
    assert set(schema["output_schema"]["properties"]) == {"texts", "total_length"}
    assert schema["supports_streaming"] is False


def test_a_failing_load_exits_non_zero_with_the_error_logged() -> None:
    command = [sys.executable, "-m", "kingpost", "serve", str(COMPAT / "load_failure")]
    result = subprocess.run(
        [*command, "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "weights are corrupt: cannot load" in result.stderr


def test_is_healthy_drives_readiness_after_load(start_server: Start) -> None:
    server = serve(start_server, "health_check")
    ready = server.url("/v1/models/model")
    assert httpx.get(ready).status_code == 200
    httpx.post(server.url("/predict"), json={"healthy": False})
    assert httpx.get(ready).status_code == 503
    httpx.post(server.url("/predict"), json={"raise": True})
    assert httpx.get(ready).status_code == 503
    httpx.post(server.url("/predict"), json={"healthy": True})
    assert httpx.get(ready).status_code == 200


def test_the_websocket_hook_echoes_and_closes_normally(start_server: Start) -> None:
    server = serve(start_server, "websocket_echo")
    url = f"ws://127.0.0.1:{server.port}/v1/websocket"
    with connect(url) as ws:
        ws.send("hello")
        assert ws.recv() == "echo: hello"
        ws.send("done")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000


def test_a_websocket_hook_exception_closes_with_1011(start_server: Start) -> None:
    server = serve(start_server, "websocket_echo")
    url = f"ws://127.0.0.1:{server.port}/environments/production/websocket"
    with connect(url) as ws:
        ws.send("boom")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011


def test_a_websocket_to_a_model_without_the_hook_closes_with_1003(start_server: Start) -> None:
    server = serve(start_server, "openai_endpoints")
    url = f"ws://127.0.0.1:{server.port}/v1/websocket"
    with connect(url) as ws, pytest.raises(ConnectionClosed) as closed:
        ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1003


def test_responses_returned_by_the_model_are_sent_as_they_are(start_server: Start) -> None:
    server = serve(start_server, "response_objects")
    created = httpx.post(server.url("/predict"), json={"kind": "json"})
    assert (created.status_code, created.json()) == (201, {"created": True})
    assert created.headers["x-model"] == "yes"
    assert "x-request-id" in created.headers
    text = httpx.post(server.url("/predict"), json={"kind": "text"})
    assert text.text == "plain words"
    streamed = httpx.post(server.url("/predict"), json={"kind": "stream"})
    assert streamed.headers["content-type"].startswith("text/csv")
    assert streamed.text == "part-0\npart-1\npart-2\n"


def test_bundled_packages_and_the_data_dir_are_available(start_server: Start) -> None:
    server = serve(start_server, "bundled_packages")
    response = httpx.post(server.url("/predict"), json={"text": "hey"})
    assert response.json() == {"shouted": "HEY!", "greeting": "greeting from the data dir"}


def test_external_package_dirs_are_importable(start_server: Start) -> None:
    server = serve(start_server, "external_packages")
    assert httpx.post(server.url("/predict"), json={"name": "ada"}).json() == "hello, ada"


def test_declared_secrets_are_read_from_the_secrets_dir_and_the_environment(
    start_server: Start, tmp_path: Path
) -> None:
    (tmp_path / "api_key").write_text("s3cret\n")
    server = serve(
        start_server,
        "secrets_access",
        "--secrets-dir",
        str(tmp_path),
        env={"TRUSS_SECRET_optional_token": "from-env"},
    )
    assert httpx.post(server.url("/predict"), json={"name": "api_key"}).json() == {
        "found": True,
        "length": 6,
    }
    token = httpx.post(server.url("/predict"), json={"name": "optional_token"}).json()
    assert token == {"found": True, "length": 8}
    undeclared = httpx.post(server.url("/predict"), json={"name": "other"}).json()
    assert undeclared["found"] is False
    assert "not declared" in undeclared["error"]


def test_pre_and_postprocess_run_outside_the_predict_limit(start_server: Start) -> None:
    server = serve(start_server, "concurrency_pre_post")
    with ThreadPoolExecutor(4) as pool:
        replies = list(
            pool.map(
                lambda i: httpx.post(server.url("/predict"), json={"id": i}, timeout=30).json(),
                range(4),
            )
        )
    assert max(reply["max_in_predict"] for reply in replies) == 1
    assert max(reply["max_in_preprocess"] for reply in replies) > 1


@pytest.mark.parametrize(
    "route", ["chat/completions", "completions", "embeddings", "messages", "responses"]
)
def test_each_v1_route_reaches_its_method(start_server: Start, route: str) -> None:
    server = serve(start_server, "openai_endpoints")
    hook = route.replace("chat/", "chat_")
    assert httpx.post(server.url(f"/v1/{route}"), json={}).json() == hook
    platform = server.url(f"/environments/production/sync/v1/{route}")
    assert httpx.post(platform, json={}).json() == hook
    assert httpx.post(server.url("/predict"), json={}).json() == "predict"


def test_a_v1_stream_is_an_event_stream_even_when_json_is_accepted(start_server: Start) -> None:
    server = serve(start_server, "openai_endpoints")
    response = httpx.post(
        server.url("/v1/chat/completions"),
        json={"stream": True},
        headers={"accept": "application/json"},
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text == "data: chat\n\ndata: completions\n\n"


def test_predict_taking_the_request_sees_its_headers(start_server: Start) -> None:
    server = serve(start_server, "request_object")
    response = httpx.post(server.url("/predict"), json=[1, 2], headers={"x-custom": "yes"})
    assert response.json() == {
        "input": [1, 2],
        "header": "yes",
        "path": "/predict",
        "disconnected": False,
    }


def test_a_config_with_build_fields_serves_and_reports_them_once(start_server: Start) -> None:
    server = serve(start_server, "full_config")
    reply = httpx.post(server.url("/predict"), json={}).json()
    assert reply == {
        "greeting": "hello",
        "retries": "3",
        "verbose": "true",
        "tags": ["demo"],
        "predict_concurrency": 2,
        "accelerator": "A10G",
    }
    logs = server.logs()
    assert logs.count("not used when serving locally") == 1
    line = next(line for line in logs.splitlines() if "not used when serving locally" in line)
    for field in ("base_image", "build_commands", "resources", "system_packages"):
        assert field in line


def test_an_async_pipeline_runs_and_http_exceptions_keep_their_status(
    start_server: Start,
) -> None:
    server = serve(start_server, "async_pipeline")
    response = httpx.post(server.url("/predict"), json={"numbers": [1, 2, 3.5]})
    assert response.json() == {"sum": 6.5, "calls": 1, "mean_ready": True}
    refused = httpx.post(server.url("/predict"), json={})
    assert (refused.status_code, refused.json()) == (422, {"error": "numbers is required"})


@pytest.mark.parametrize(
    ("args", "environment"), [((), None), (("--environment", "staging"), {"name": "staging"})]
)
def test_setup_environment_runs_before_load_with_the_environment(
    start_server: Start, args: tuple[str, ...], environment: dict[str, str] | None
) -> None:
    server = serve(start_server, "environment_setup", *args)
    assert httpx.post(server.url("/predict"), json={}).json() == {
        "calls": ["setup_environment", "load"],
        "environment": environment,
        "environment_at_init": environment,
    }


def read_frame(sock: socket.socket) -> tuple[int, bytes]:
    """One unmasked server frame: (opcode, payload)."""
    head = sock.recv(2, socket.MSG_WAITALL)
    length = head[1] & 0x7F
    if length == 126:
        length = int.from_bytes(sock.recv(2, socket.MSG_WAITALL), "big")
    payload = sock.recv(length, socket.MSG_WAITALL) if length else b""
    return head[0] & 0x0F, payload


def test_the_transport_ping_interval_applies_to_websockets(
    start_server: Start, tmp_path: Path
) -> None:
    model = tmp_path / "pinging"
    shutil.copytree(COMPAT / "websocket_echo", model)
    config = (
        (model / "config.yaml")
        .read_text()
        .replace("ping_interval_seconds: 5", "ping_interval_seconds: 0.2")
    )
    (model / "config.yaml").write_text(config)
    server = start_server(model)
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(
            f"GET /v1/websocket HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        handshake = b""
        while b"\r\n\r\n" not in handshake:
            handshake += sock.recv(1)
        assert handshake.startswith(b"HTTP/1.1 101")
        started = time.monotonic()
        opcode, _ = read_frame(sock)
        assert opcode == 0x9  # a ping, unprompted
        assert time.monotonic() - started < 2
