"""On the platform, queued work wakes a scaled-to-zero deployment and its result is kept."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from kingpost.async_queue.models import Status
from kingpost.async_queue.store import AsyncStore, NewRequest
from tests.platform.conftest import PlatformProcess, model_copy, wait_for


def test_async_work_wakes_a_deployment_at_zero_replicas(tmp_path: Path) -> None:
    platform = PlatformProcess(tmp_path / "home").start()
    try:
        platform.admin.create_model("queued")
        platform.admin.autoscaling(
            "queued", "production", {"autoscaling_window": 0.2, "scale_down_delay": 0.3}
        )
        directory = model_copy(tmp_path, "queued")
        record = platform.admin.deploy(directory, "queued", environment="production")
        platform.admin.wait_deployed(record["id"], "production", timeout=60)
        wait_for(lambda: platform.admin.deployment(record["id"])["replicas"] == 0, 20, "zero")

        with httpx.Client(timeout=30) as client:
            submitted = client.post(
                platform.url("/models/queued/production/async_predict"),
                json={"model_input": {"x": 1}},
            )
            assert submitted.status_code == 201, submitted.text
            request_id = submitted.json()["request_id"]
            status_url = platform.url(f"/async_request/{request_id}")

            deadline = time.monotonic() + 60
            while (found := client.get(status_url).json())["status"] != "SUCCEEDED":
                assert found["status"] in ("QUEUED", "IN_PROGRESS"), found
                assert time.monotonic() < deadline, found
                time.sleep(0.1)
            assert found["deployment_id"] == record["id"]
            result = client.get(status_url + "/result")
            assert result.status_code == 200 and "version" in result.json()
            queue = client.get(platform.url("/models/queued/production/async_queue_status"))
            assert queue.json()["num_queued_requests"] == 0

            # Under a model's prefix only that model's requests are found.
            platform.admin.create_model("other")
            own = client.get(platform.url(f"/models/queued/async_request/{request_id}"))
            assert own.status_code == 200 and own.json()["status"] == "SUCCEEDED"
            for model in ("other", "nosuch"):
                url = platform.url(f"/models/{model}/async_request/{request_id}")
                assert client.get(url).status_code == 404
                assert client.get(url + "/result").status_code == 404
                assert client.delete(url).status_code == 404
    finally:
        platform.close()


def deployed(platform: PlatformProcess, tmp_path: Path, model: str) -> dict[str, Any]:
    """A new model with a copy of the test model deployed to its production."""
    platform.admin.create_model(model)
    directory = model_copy(tmp_path, model)
    record: dict[str, Any] = platform.admin.deploy(directory, model, environment="production")
    platform.admin.wait_deployed(record["id"], "production", timeout=60)
    return record


def test_queued_work_resumes_when_the_platform_restarts(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = PlatformProcess(home).start()
    try:
        record = deployed(first, tmp_path, "resumed")
        model_id = first.admin.deployment(record["id"])["model_id"]
        first.kill9()
    finally:
        first.close()
    # Accepted just before the platform died: committed, never claimed.
    store = AsyncStore(f"sqlite:///{home / 'state.db'}")
    now = time.time()
    store.submit(
        [
            NewRequest(
                id="queued-before-the-restart",
                queue=f"{model_id}/{record['id']}",
                model_id=model_id,
                deployment_id=record["id"],
                priority=0,
                webhook_endpoint=None,
                model_input=b'{"x": 1}',
                created_at=now,
                expires_at=now + 600,
                max_attempts=3,
                initial_delay_ms=100,
                max_delay_ms=200,
            )
        ]
    )
    store.close()

    second = PlatformProcess(home).start()
    try:
        # Only the request's own URL is asked: nothing touches the deployment's routes.
        status_url = second.url("/async_request/queued-before-the-restart")
        with httpx.Client(timeout=30) as client:
            deadline = time.monotonic() + 60
            while (found := client.get(status_url).json())["status"] != "SUCCEEDED":
                assert found["status"] in ("QUEUED", "IN_PROGRESS"), found
                assert time.monotonic() < deadline, (found, second.logs()[-3000:])
                time.sleep(0.1)
        assert "resumed its unfinished work" in second.logs()
        metrics = httpx.get(second.url("/metrics"), timeout=10).text
        drained = (
            f'kingpost_async_queue_requests{{deployment_id="{record["id"]}",'
            f'model_id="{model_id}",priority="0",status="QUEUED"}} 0.0'
        )
        assert drained in metrics, metrics
        assert "kingpost_async_queue_oldest_age_seconds{" in metrics
    finally:
        second.close()


def test_a_stopped_platform_finishes_short_async_work_and_gives_back_the_rest(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    platform = PlatformProcess(home).start()
    try:
        deployed(platform, tmp_path, "stopping")
        ids = {}
        with httpx.Client(timeout=30) as client:
            for name, seconds in (("short", 1), ("long", 120)):
                submitted = client.post(
                    platform.url("/models/stopping/production/async_predict"),
                    json={"model_input": {"x": 1, "sleep": seconds}},
                )
                assert submitted.status_code == 201, submitted.text
                ids[name] = submitted.json()["request_id"]
            for request_id in ids.values():
                status_url = platform.url(f"/async_request/{request_id}")
                wait_for(
                    lambda url=status_url: client.get(url).json()["status"] == "IN_PROGRESS",
                    30,
                    "running",
                )
        platform.stop()  # SIGTERM while both run on the replica
        assert platform.process is not None and platform.process.returncode == 0
    finally:
        platform.close()
    store = AsyncStore(f"sqlite:///{home / 'state.db'}")
    try:
        short, long = store.get(ids["short"]), store.get(ids["long"])
    finally:
        store.close()
    # The short one finished within the workers' grace and was recorded; the long one
    # went back to the queue at once, rather than waiting IN_PROGRESS for its lease.
    assert short is not None and short.status is Status.SUCCEEDED, short
    assert long is not None and long.status is Status.QUEUED, long
