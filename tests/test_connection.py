"""The connection layer: caps on the request head, timeouts for slow clients, JSON errors."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from kingpost.connection import ConnectionLimits, guarded_protocol
from kingpost.testing import free_port
from tests.hostile.raw import get, raw_exchange, status_of

LIMITS = ConnectionLimits(
    max_head_bytes=8 * 1024,
    max_header_fields=20,
    head_timeout=0.5,
    body_timeout=0.5,
    send_timeout=0.5,
)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with the body's size; ``/big`` streams 64 MiB to test a client that never reads."""
    if scope["type"] != "http":
        return
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    if scope["path"] == "/big":
        chunk = b"x" * (1 << 20)
        for _ in range(64):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": str(size).encode()})


class Running:
    def __init__(self, port: int, server: uvicorn.Server) -> None:
        self.port = port
        self.server = server


@pytest.fixture(scope="module")
def running() -> Iterator[Running]:
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        http=guarded_protocol(LIMITS),
        log_config=None,
        lifespan="off",
        timeout_keep_alive=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    yield Running(port, server)
    server.should_exit = True
    thread.join(10)


def test_a_plain_request_passes(running: Running) -> None:
    reply = raw_exchange(running.port, get("/"))
    assert status_of(reply) == 200


def test_a_head_past_the_byte_cap_gets_431_before_it_ends(running: Running) -> None:
    with socket.create_connection(("127.0.0.1", running.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nx-big: " + b"a" * 16 * 1024)
        reply = sock.recv(65536)
    assert status_of(reply) == 431 and b"application/json" in reply


def test_too_many_header_fields_get_431(running: Running) -> None:
    fields = "".join(f"x-{n}: {n}\r\n" for n in range(30))
    reply = raw_exchange(running.port, get("/", extra=fields))
    assert status_of(reply) == 431 and b"header fields" in reply


def test_http11_without_host_is_a_400_in_json(running: Running) -> None:
    reply = raw_exchange(running.port, get("/", host=False))
    assert status_of(reply) == 400 and b'"error"' in reply and b"Host" in reply
    assert status_of(raw_exchange(running.port, b"GET / HTTP/1.0\r\n\r\n")) == 200


def test_garbage_gets_a_json_400(running: Running) -> None:
    reply = raw_exchange(running.port, b"\x16\x03\x01 not http\r\n\r\n")
    assert status_of(reply) == 400 and b"application/json" in reply


def test_a_slow_head_gets_408_and_an_idle_connection_is_closed(running: Running) -> None:
    with socket.create_connection(("127.0.0.1", running.port), timeout=5) as slow:
        slow.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        assert status_of(slow.recv(65536)) == 408
    with socket.create_connection(("127.0.0.1", running.port), timeout=5) as idle:
        assert idle.recv(65536) == b""  # closed, nothing said


def test_a_stalled_body_gets_408(running: Running) -> None:
    with socket.create_connection(("127.0.0.1", running.port), timeout=5) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\ncontent-length: 100\r\n\r\nhalf")
        reply = sock.recv(65536)
    assert status_of(reply) == 408 and b"body" in reply


def test_a_client_that_never_reads_is_cut(running: Running) -> None:
    with socket.create_connection(("127.0.0.1", running.port), timeout=5) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(get("/big"))
        time.sleep(1.5)  # longer than send_timeout: the server gives up on this reader
        received = 0
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(1 << 20)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            received += len(chunk)
    assert received < 1 << 20  # reset: not even what the kernel held was delivered
