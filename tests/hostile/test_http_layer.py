"""The served HTTP layer against hostile requests: caps, Host, JSON errors, big integers."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from kingpost.testing import ServerProcess
from tests.conftest import MODELS
from tests.hostile.raw import get, raw_exchange, status_of


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with ServerProcess(MODELS / "sync_echo", "--header-timeout", "2") as process:
        yield process


def test_a_64_mib_header_is_refused_at_once_without_stalling_others(server: ServerProcess) -> None:
    latencies: list[float] = []

    def probe() -> None:
        with httpx.Client(timeout=10) as client:
            for _ in range(20):
                started = time.monotonic()
                client.get(server.url("/"))
                latencies.append(time.monotonic() - started)

    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nx-big: ")
        watcher = threading.Thread(target=probe)
        watcher.start()
        sent = 0
        reply = b""
        try:
            while sent < 64 << 20:
                sock.sendall(b"a" * (1 << 20))
                sent += 1 << 20
        except OSError:
            pass  # refused and closed before all of it was sent
        reply = sock.recv(65536)
        watcher.join(30)
    assert status_of(reply) == 431 and b"application/json" in reply
    assert sent < 64 << 20
    assert max(latencies) < 1.0


def test_http11_without_host_and_garbage_get_json_400s(server: ServerProcess) -> None:
    reply = raw_exchange(server.port, get("/predict", host=False))
    assert status_of(reply) == 400 and b"Host" in reply
    garbage = raw_exchange(server.port, b"GET /\x00 HTTP/1.1\r\n\r\n")
    assert status_of(garbage) == 400 and b"application/json" in garbage


def test_a_slowloris_head_gets_408(server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        reply = sock.recv(65536)
    assert status_of(reply) == 408 and time.monotonic() - started < 5


def test_integers_past_64_bits_come_back_exact(server: ServerProcess) -> None:
    body = b'{"n": 123456789012345678901234567890, "m": -18446744073709551617}'
    reply = httpx.post(server.url("/predict"), content=body)
    assert reply.status_code == 200
    assert (
        reply.content == b'{"echo":{"n":123456789012345678901234567890,"m":-18446744073709551617}}'
    )


def test_a_body_of_millions_of_values_is_a_413(server: ServerProcess) -> None:
    body = b"[" + b"{}," * 3_000_000 + b"{}]"
    reply = httpx.post(server.url("/predict"), content=body, timeout=30)
    assert reply.status_code == 413 and "values" in reply.json()["error"]
