"""When the client goes away, the model's work for it stops."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
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


def send_and_hang_up(server: ServerProcess, path: str, payload: object, wait: float) -> bytes:
    """Send a request on a raw socket, read for ``wait`` seconds, then close it."""
    body = orjson.dumps(payload)
    head = (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode()
    received = b""
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head + body)
        sock.settimeout(0.1)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                received += sock.recv(65536)
    return received


def wait_for(path: Path, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # The model writes the file in two steps (create, then write): wait for content.
        if path.exists() and (text := path.read_text()):
            return text
        time.sleep(0.05)
    raise AssertionError(f"{path.name} was never written")


def test_an_async_hook_is_cancelled(server: ServerProcess, markers: Path) -> None:
    send_and_hang_up(server, "/predict", {"mode": "async"}, wait=0.5)
    assert wait_for(markers / "async_cancelled") == "yes"
    assert not (markers / "async_finished").exists()
    assert "POST /predict 499" in server.logs()


def test_an_async_generator_is_cancelled(server: ServerProcess, markers: Path) -> None:
    received = send_and_hang_up(server, "/predict", {"mode": "async_gen"}, wait=0.5)
    assert b"0;" in received
    assert wait_for(markers / "async_gen_stopped") == "yes"


def test_a_sync_generator_stops_being_pulled(server: ServerProcess, markers: Path) -> None:
    send_and_hang_up(server, "/predict", {"mode": "sync_gen"}, wait=0.5)
    pulled_at_close = int(wait_for(markers / "sync_gen_closed"))
    assert pulled_at_close < 50  # far from the 200 chunks it would have made
    time.sleep(0.3)
    assert int((markers / "sync_gen_pulled").read_text()) == pulled_at_close


def test_thread_code_sees_the_disconnect_event(server: ServerProcess, markers: Path) -> None:
    send_and_hang_up(server, "/v1/completions", {}, wait=0.5)
    seconds = float(wait_for(markers / "thread_saw_disconnect"))
    assert seconds < 2.0  # set within a second of the hang-up


def test_is_disconnected_can_be_polled(server: ServerProcess, markers: Path) -> None:
    send_and_hang_up(server, "/v1/chat/completions", {}, wait=0.3)
    # Polling said False while the client was there (else the hook would have ended early
    # with "seen while polling"), and True once it had gone.
    assert wait_for(markers / "polled_disconnect") in ("seen on cancel", "seen while polling")
