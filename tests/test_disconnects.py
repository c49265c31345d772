"""When the client goes away, the model's work for it stops."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from kingpost.testing import ServerProcess
from tests.conftest import MODELS


@pytest.fixture(scope="module")
def markers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("markers")


@pytest.fixture(scope="module")
def server(markers: Path) -> Iterator[ServerProcess]:
    with ServerProcess(MODELS / "disconnects", env={"MARKER_DIR": str(markers)}) as server:
        yield server


def send_and_hang_up(
    server: ServerProcess, path: str, payload: object, until: Callable[[bytes], bool]
) -> bytes:
    """Send a request on a raw socket, read until ``until(received)`` holds, then close it."""
    body = orjson.dumps(payload)
    head = (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode()
    received = b""
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head + body)
        sock.settimeout(0.05)
        deadline = time.monotonic() + 20
        while not until(received):
            assert time.monotonic() < deadline, f"still waiting, with {received!r}"
            with contextlib.suppress(TimeoutError):
                received += sock.recv(65536)
    return received


def has_started(marker: Path) -> Callable[[bytes], bool]:
    """Hang up once the model has written ``marker`` (its hook is running)."""
    return lambda _: marker.exists()


def has_received(data: bytes) -> Callable[[bytes], bool]:
    return lambda received: data in received


def wait_for(path: Path, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # The model writes the file in two steps (create, then write): wait for content.
        if path.exists() and (text := path.read_text()):
            return text
        time.sleep(0.05)
    raise AssertionError(f"{path.name} was never written")


def test_an_async_hook_is_cancelled(server: ServerProcess, markers: Path) -> None:
    send_and_hang_up(server, "/predict", {"mode": "async"}, has_started(markers / "async_started"))
    assert wait_for(markers / "async_cancelled") == "yes"
    assert not (markers / "async_finished").exists()
    server.wait_for_log("POST /predict 499")


def test_an_async_generator_is_cancelled(server: ServerProcess, markers: Path) -> None:
    send_and_hang_up(server, "/predict", {"mode": "async_gen"}, has_received(b"0;"))
    assert wait_for(markers / "async_gen_stopped") == "yes"


def test_a_sync_generator_stops_being_pulled(server: ServerProcess, markers: Path) -> None:
    send_and_hang_up(server, "/predict", {"mode": "sync_gen"}, has_received(b"0;"))
    # Closed (a closed generator is never pulled again) far from the 200 chunks it makes.
    assert int(wait_for(markers / "sync_gen_closed")) < 50


def test_thread_code_sees_the_disconnect_event(server: ServerProcess, markers: Path) -> None:
    send_and_hang_up(server, "/v1/completions", {}, has_started(markers / "thread_started"))
    seconds = float(wait_for(markers / "thread_saw_disconnect"))
    assert seconds < 2.0  # set within a second of the hang-up


def test_is_disconnected_can_be_polled(server: ServerProcess, markers: Path) -> None:
    send_and_hang_up(server, "/v1/chat/completions", {}, has_started(markers / "polling_started"))
    # Polling said False while the client was there (else the hook would have ended early
    # with "seen while polling"), and True once it had gone.
    assert wait_for(markers / "polled_disconnect") in ("seen on cancel", "seen while polling")
