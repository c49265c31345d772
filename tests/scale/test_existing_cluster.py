"""``--ray-address``: the model joins a cluster it did not start, and leaves it running.

The cluster (``owner``) is shared with the other modules that join one.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kingpost.testing import ServerProcess
from tests.conftest import EXAMPLES, MODELS
from tests.scale.conftest import (
    RAY_STARTUP_TIMEOUT,
    REPLICA_HEADER,
    ClusterOwner,
    process_tree,
    ray_server,
    requires_ray,
    wait_until,
)

pytestmark = requires_ray

MODEL = MODELS / "ray_replicas"


@pytest.fixture(scope="module")
def server(owner: ClusterOwner) -> Iterator[ServerProcess]:
    with ray_server(MODEL, "--ray-address", owner.address) as server:
        yield server


def test_the_model_serves_from_the_existing_cluster(server: ServerProcess) -> None:
    reply = httpx.post(server.url("/predict"), json={}, timeout=RAY_STARTUP_TIMEOUT)
    assert reply.status_code == 200
    assert reply.headers[REPLICA_HEADER]
    # The replica runs the copy of the model directory shipped with the application.
    assert not Path(reply.json()["file"]).is_relative_to(MODEL)
    assert Path(reply.json()["file"]).name == "model.py"


def test_stopping_removes_the_application_and_leaves_the_cluster(
    owner: ClusterOwner, server: ServerProcess
) -> None:
    owner.check_server_leaves(server)


def test_a_model_that_fails_to_load_exits_with_code_3(owner: ClusterOwner) -> None:
    command = [sys.executable, "-m", "kingpost", "serve", str(MODELS / "load_failure")]
    broken = subprocess.run(
        [*command, "--port", "0", "--ray-address", owner.address],
        capture_output=True,
        timeout=RAY_STARTUP_TIMEOUT,
        start_new_session=True,
    )
    output = (broken.stdout + broken.stderr).decode(errors="replace")
    assert broken.returncode == 3, output[-3000:]
    assert "could not be deployed on Ray" in output
    assert "kingpost" not in owner.apps()  # nothing left behind on the cluster


def test_a_custom_server_runs_as_a_deployment(owner: ClusterOwner) -> None:
    def children() -> list[str]:
        assert owner.process is not None
        tree = process_tree(owner.process.pid)
        return [command for command in tree.values() if "server.py --port 8000" in command]

    with ray_server(EXAMPLES / "custom-server", "--ray-address", owner.address) as server:
        reply = httpx.post(server.url("/predict"), json={"text": "hi"}, timeout=30)
        assert reply.status_code == 200, reply.text
        assert reply.headers[REPLICA_HEADER]
        assert children()  # the replica supervises the server's command
        platform_url = server.url("/environments/production/sync/predict")
        reply = httpx.post(platform_url, json={"text": "a b c"}, timeout=30)
        assert reply.json() == {"greeting": "hello", "words": 3, "shout": "A B C"}
        # The custom server's own errors pass through.
        assert httpx.post(server.url("/predict"), json={}, timeout=30).status_code == 422
    # Stopping the application stops the command the replica supervised.
    wait_until(lambda: not children(), 30, "the custom server stopping with its replica")
