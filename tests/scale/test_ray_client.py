"""``--ray-address ray://HOST:PORT``: the model joins a cluster through its Ray Client server.

The shared ``owner`` cluster runs a Ray Client server on 127.0.0.1; Kingpost's
front then drives Serve over that one connection.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from kingpost.testing import ServerProcess
from tests.conftest import MODELS
from tests.scale.conftest import (
    RAY_STARTUP_TIMEOUT,
    REPLICA_HEADER,
    ClusterOwner,
    ray_server,
    requires_ray,
)

pytestmark = requires_ray


@pytest.fixture(scope="module")
def server(owner: ClusterOwner) -> Iterator[ServerProcess]:
    assert owner.client_address.startswith("ray://127.0.0.1:")
    with ray_server(MODELS / "streams", "--ray-address", owner.client_address) as server:
        yield server


def test_a_stream_arrives_whole_through_the_ray_client(server: ServerProcess) -> None:
    reply = httpx.post(server.url("/predict"), json={"count": 5}, timeout=RAY_STARTUP_TIMEOUT)
    assert reply.status_code == 200, reply.text
    assert reply.text == "".join(f"chunk-{i};" for i in range(5))
    assert reply.headers[REPLICA_HEADER]


def test_a_websocket_is_refused_with_1011(server: ServerProcess) -> None:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    url = f"ws://127.0.0.1:{server.port}/v1/websocket"
    with connect(url, open_timeout=30) as ws, pytest.raises(ConnectionClosed):
        ws.recv(timeout=30)
    assert ws.close_code == 1011


def test_stopping_removes_the_application_and_leaves_the_cluster(
    owner: ClusterOwner, server: ServerProcess
) -> None:
    owner.check_server_leaves(server)
