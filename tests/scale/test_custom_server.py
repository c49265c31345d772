"""A custom server (``docker_server:``) as a Ray Serve deployment: the replica supervises
the command and forwards to it, with the same routes as plain ``kingpost serve``.

It joins the shared cluster (``owner``) rather than starting one of its own.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from kingpost.testing import ServerProcess
from tests.conftest import EXAMPLES
from tests.scale.conftest import RAY_STARTUP_TIMEOUT, ClusterOwner, ray_server, requires_ray

pytestmark = requires_ray


@pytest.fixture(scope="module")
def server(owner: ClusterOwner) -> Iterator[ServerProcess]:
    with ray_server(EXAMPLES / "custom-server", "--ray-address", owner.address) as server:
        yield server


@pytest.mark.parametrize("path", ["/predict", "/environments/production/sync/predict"])
def test_the_custom_server_answers_through_ray(server: ServerProcess, path: str) -> None:
    reply = httpx.post(server.url(path), json={"text": "a b c"}, timeout=RAY_STARTUP_TIMEOUT)
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"greeting": "hello", "words": 3, "shout": "A B C"}


def test_the_custom_servers_own_errors_pass_through(server: ServerProcess) -> None:
    reply = httpx.post(server.url("/predict"), json={"nope": 1}, timeout=RAY_STARTUP_TIMEOUT)
    assert reply.status_code == 422
