"""Through ``--ray``, a client that goes away stops the model's work inside the replica.

The front cancels its handle call; the replica hands the app an ``http.disconnect``
as uvicorn would, so the core cancels async hooks and sets sync hooks' event. The
server joins the shared cluster of ``owner``, whose replicas write the markers.
"""

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
from tests.scale.conftest import ClusterOwner, ray_server, requires_ray

pytestmark = requires_ray

# The work must stop within a second of the hang-up (the bound the tests allow).
STOPS_WITHIN = 1.0


@pytest.fixture(scope="module")
def markers(owner: ClusterOwner) -> Path:
    return owner.markers


@pytest.fixture(scope="module")
def server(owner: ClusterOwner) -> Iterator[ServerProcess]:
    with ray_server(MODELS / "disconnects", "--ray-address", owner.address) as server:
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


def wait_for(path: Path, timeout: float = STOPS_WITHIN) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and (text := path.read_text()):
            return text
        time.sleep(0.02)
    raise AssertionError(f"{path.name} was not written within {timeout} s of the hang-up")


def test_an_async_hook_is_cancelled(server: ServerProcess, markers: Path) -> None:
    send_and_hang_up(server, "/predict", {"mode": "async"}, wait=1.0)
    assert wait_for(markers / "async_cancelled") == "yes"
    assert not (markers / "async_finished").exists()


def test_a_stream_arrives_incrementally_and_stops_when_the_client_leaves(
    server: ServerProcess, markers: Path
) -> None:
    # The generator would run for 10 s; its first chunks come while it is still going.
    received = send_and_hang_up(server, "/predict", {"mode": "async_gen"}, wait=1.0)
    assert b"0;" in received
    assert wait_for(markers / "async_gen_stopped") == "yes"


def test_a_sync_generator_stops_being_pulled(server: ServerProcess, markers: Path) -> None:
    received = send_and_hang_up(server, "/predict", {"mode": "sync_gen"}, wait=1.0)
    assert b"0;" in received
    pulled_at_close = int(wait_for(markers / "sync_gen_closed"))
    assert pulled_at_close < 60  # far from the 200 chunks it would have made
    time.sleep(0.3)
    assert int((markers / "sync_gen_pulled").read_text()) == pulled_at_close


def test_thread_code_sees_the_disconnect_event(server: ServerProcess, markers: Path) -> None:
    send_and_hang_up(server, "/v1/completions", {}, wait=1.0)
    seconds = float(wait_for(markers / "thread_saw_disconnect"))
    assert seconds < 1.0 + STOPS_WITHIN + 0.5  # the hang-up came after 1 s of work


def test_the_replica_logs_the_request_as_client_closed(server: ServerProcess) -> None:
    deadline = time.monotonic() + 5
    while "POST /predict 499" not in server.logs() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "POST /predict 499" in server.logs()
