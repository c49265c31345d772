"""``kill -9`` of the platform, then ``kingpost up`` again on the same home."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.platform.conftest import PlatformProcess, model_copy, pid_alive, wait_for


def test_state_and_replicas_come_back_after_kill_9_of_the_platform(
    home: Path, tmp_path: Path
) -> None:
    first = PlatformProcess(home).start()
    try:
        first.admin.create_model("kept")
        first.admin.create_environment("kept", "staging", {"min_replica": 1, "max_replica": 2})
        first.admin.autoscaling("kept", "production", {"min_replica": 1})
        prod = first.admin.deploy(model_copy(tmp_path, "a"), "kept", environment="production")
        first.admin.wait_deployed(prod["id"], "production", timeout=60)
        staging = first.admin.deploy(
            model_copy(tmp_path, "b", **{"model__version.txt": "v2"}), "kept", environment="staging"
        )
        first.admin.wait_deployed(staging["id"], "staging", timeout=60)
        answer = httpx.post(first.url("/models/kept/production/predict"), json={}).json()
        first.kill9()
    finally:
        first.close()
    # Its replicas go with it (their process group is hung up on).
    wait_for(lambda: not pid_alive(answer["pid"]), 10, "the orphaned replica to exit")

    second = PlatformProcess(home).start()
    try:
        environments = {env["name"]: env for env in second.admin.environments("kept")}
        assert environments["production"]["deployment_id"] == prod["id"]
        assert environments["staging"]["deployment_id"] == staging["id"]
        assert environments["staging"]["autoscaling"]["max_replica"] == 2
        # min_replica 1: the replicas start again without a request.
        wait_for(
            lambda: all(
                (env["replicas"] or {}).get("ready") == 1
                for env in second.admin.environments("kept")
            ),
            30,
            "both environments' replicas",
        )
        for env, version in (("production", "v1"), ("environments/staging", "v2")):
            reply = httpx.post(second.url(f"/models/kept/{env}/predict"), json={}).json()
            assert reply["version"] == version
        listing = second.cli("models")
        assert listing.returncode == 0 and "kept" in listing.stdout
        logs = second.cli("logs", prod["id"])
        assert logs.returncode == 0 and "listening on" in logs.stdout
    finally:
        second.close()
