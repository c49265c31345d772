"""Through ``--ray --replicas 0:2``: load adds replicas up to the maximum, idleness
removes them down to zero, and a request wakes the deployment again."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from kingpost.testing import ServerProcess
from tests.conftest import MODELS
from tests.scale.conftest import LoadLoop, ray_server, replica_pids, requires_ray, wait_until

pytestmark = requires_ray

MAX_REPLICAS = 2


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with ray_server(
        MODELS / "ray_replicas",
        "--replicas",
        f"0:{MAX_REPLICAS}",
        "--autoscaling",
        "autoscaling_window=1",
        "--autoscaling",
        "scale_down_delay=2",
        "--autoscaling",
        "target_utilization_percentage=100",
    ) as server:
        yield server


def test_load_grows_replicas_to_the_maximum_and_idleness_shrinks_them_to_zero(
    server: ServerProcess,
) -> None:
    counts: list[int] = []

    def at_maximum() -> bool:
        counts.append(len(replica_pids(server)))
        return counts[-1] == MAX_REPLICAS

    # Six clients of 0.3 s requests keep about six in flight: three per replica wanted.
    # A replica can take tens of seconds to start on a busy 2-core machine.
    with LoadLoop(server, {"sleep": 0.3}, workers=6, max_seconds=150) as load:
        try:
            wait_until(at_maximum, 120, "replicas growing to the maximum under load", server)
        except AssertionError as error:
            raise AssertionError(f"replica counts seen: {sorted(set(counts))}\n{error}") from None
        seen = {o.replica for o in load.snapshot()}
        wait_until(
            lambda: len({o.replica for o in load.snapshot()} - seen) > 0 or len(seen) >= 2,
            20,
            "the new replica answering",
        )
    assert max(counts) <= MAX_REPLICAS
    assert all(o.status == 200 for o in load.outcomes)
    assert len({o.replica for o in load.outcomes}) >= 2

    wait_until(lambda: not replica_pids(server), 60, "replicas going down to zero when idle")

    # A request at zero replicas is parked while one starts, then answered.
    reply = httpx.post(server.url("/predict"), json={"sleep": 0}, timeout=90)
    assert reply.status_code == 200
    assert len(replica_pids(server)) == 1
