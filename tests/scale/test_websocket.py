"""Websockets through ``--ray``: frames both ways, the close codes plain serve gives, disconnects.

Every test runs against plain ``kingpost serve`` and against ``--ray`` (joining the
shared ``owner`` cluster, whose replicas write the markers), and expects the same.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from kingpost.testing import ServerProcess
from tests.conftest import MODELS
from tests.scale.conftest import REPLICA_HEADER, ClusterOwner, ray_server, requires_ray

pytestmark = requires_ray

MODEL = MODELS / "ray_sockets"
TIMEOUT = 30.0
# The replica's handler sees the hang-up within this long (the front relays it).
ENDS_WITHIN = 2.0


@pytest.fixture(scope="module")
def markers(owner: ClusterOwner) -> Path:
    return owner.markers


@pytest.fixture(scope="module")
def ray(owner: ClusterOwner) -> Iterator[ServerProcess]:
    with ray_server(MODEL, "--ray-address", owner.address) as server:
        yield server


@pytest.fixture(scope="module")
def plain(markers: Path) -> Iterator[ServerProcess]:
    with ServerProcess(MODEL, env={"MARKER_DIR": str(markers)}) as server:
        yield server


@pytest.fixture(params=["plain", "ray"])
def server(request: pytest.FixtureRequest) -> ServerProcess:
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


def open_socket(server: ServerProcess, path: str = "/v1/websocket") -> ClientConnection:
    return connect(f"ws://127.0.0.1:{server.port}{path}", open_timeout=TIMEOUT)


def close_code(ws: ClientConnection) -> tuple[int | None, str | None]:
    with pytest.raises(ConnectionClosed):
        ws.recv(timeout=TIMEOUT)
    assert ws.close_code is not None or ws.close_reason is not None
    return ws.close_code, ws.close_reason


def test_text_and_binary_frames_go_both_ways(server: ServerProcess) -> None:
    with open_socket(server) as ws:
        for i in range(20):
            ws.send(f"hello {i}")
            ws.send(bytes([i, 1, 2]))
        for i in range(20):
            assert ws.recv(timeout=TIMEOUT) == f"echo: hello {i}"
            assert ws.recv(timeout=TIMEOUT) == bytes([2, 1, i])
        ws.send("done")
        assert close_code(ws) == (1000, "")


def test_the_replica_names_itself_in_the_handshake(ray: ServerProcess) -> None:
    with open_socket(ray) as ws:
        assert ws.response is not None and ws.response.headers[REPLICA_HEADER]
        ws.send("done")


@pytest.mark.parametrize(
    ("frame", "expected"),
    [("close", (4001, "asked to close")), ("fail", (1011, "RuntimeError"))],
    ids=["model-closes", "model-raises"],
)
def test_close_codes_are_the_model_s(
    server: ServerProcess, frame: str, expected: tuple[int, str]
) -> None:
    with open_socket(server) as ws:
        ws.send(frame)
        assert close_code(ws) == expected


def test_a_path_without_a_websocket_closes_with_1003(server: ServerProcess) -> None:
    with open_socket(server, "/v1/nope") as ws:
        code, _ = close_code(ws)
    assert code == 1003


def test_platform_websocket_url(server: ServerProcess) -> None:
    with open_socket(server, "/environments/production/websocket") as ws:
        ws.send("hi")
        assert ws.recv(timeout=TIMEOUT) == "echo: hi"
        ws.send("done")


def test_a_client_that_leaves_ends_the_replica_s_handler(
    server: ServerProcess, markers: Path
) -> None:
    name = uuid.uuid4().hex
    with open_socket(server, f"/v1/websocket?name={name}") as ws:
        ws.send("still here")
        assert ws.recv(timeout=TIMEOUT) == "echo: still here"
        ws.socket.shutdown(socket.SHUT_RDWR)  # away, with no close frame
    marker = markers / f"ws_{name}"
    deadline = time.monotonic() + ENDS_WITHIN
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert marker.exists(), f"the handler did not see the disconnect within {ENDS_WITHIN} s"
