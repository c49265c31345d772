"""A replica process killed under load is replaced; only the requests it held fail.

The server joins the shared cluster of ``owner`` (its replicas run below that process).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from kingpost.testing import ServerProcess
from tests.conftest import MODELS
from tests.scale.conftest import (
    ClusterOwner,
    LoadLoop,
    ray_server,
    replica_pids,
    requires_ray,
    wait_until,
)

pytestmark = requires_ray

HOLD = 0.5  # seconds each request stays in its replica
PER_REPLICA = 2  # runtime.predict_concurrency of the model: Serve's max_ongoing_requests


@pytest.fixture(scope="module")
def server(owner: ClusterOwner) -> Iterator[ServerProcess]:
    with ray_server(
        MODELS / "ray_replicas", "--ray-address", owner.address, "--replicas", "2"
    ) as server:
        yield server


def test_a_killed_replica_is_replaced_and_only_its_requests_fail(
    owner: ClusterOwner, server: ServerProcess
) -> None:
    before = replica_pids(owner)
    assert len(before) == 2
    victim = min(before)
    with LoadLoop(server, {"sleep": HOLD}, workers=6, max_seconds=90) as load:
        wait_until(lambda: len(load.snapshot()) >= 12, 30, "the load loop getting answers")
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        wait_until(
            lambda: len(replica_pids(owner) - before) == 1 and len(replica_pids(owner)) == 2,
            60,
            "a replacement replica starting",
        )
        replaced_at = time.monotonic()
        wait_until(
            lambda: sum(o.started > replaced_at for o in load.snapshot()) >= 12,
            30,
            "answers after the replacement",
        )
    failures = [o for o in load.outcomes if o.status != 200]
    print(f"{len(load.outcomes)} requests, failures: {failures}")
    # Each failure was in flight when the process died (started before, ended after) ...
    assert all(o.started <= killed_at <= o.ended for o in failures), failures
    # ... and there are no more of them than the replica could hold.
    assert len(failures) <= PER_REPLICA, failures
    assert {o.status for o in failures} <= {502}
    late = [o for o in load.outcomes if o.started > killed_at + HOLD]
    assert late and all(o.status == 200 for o in late)
