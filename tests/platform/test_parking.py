"""Parking is bounded: past the wait or the queue length, 503 with Retry-After; and the
sync limit: no reply within ``request_timeout``, 504."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from tests.platform.conftest import PlatformProcess, model_copy, wait_for


def test_parked_requests_past_the_timeout_or_the_limit_get_503_with_retry_after(
    home: Path, tmp_path: Path
) -> None:
    file = tmp_path / "kingpost.yaml"
    file.write_text("platform:\n  request_timeout: 1\n")
    platform = PlatformProcess(
        home, str(file), "--park-timeout", "0.5", "--park-limit", "1"
    ).start()
    try:
        platform.admin.create_model("slow")
        platform.admin.autoscaling(
            "slow", "production", {"autoscaling_window": 0.2, "scale_down_delay": 0.3}
        )
        directory = model_copy(tmp_path, "slow", **{"model__load_delay.txt": "2"})
        record = platform.admin.deploy(directory, "slow", environment="production")
        platform.admin.wait_deployed(record["id"], "production", timeout=60)
        wait_for(lambda: platform.admin.deployment(record["id"])["replicas"] == 0, 15, "zero")
        url = platform.url("/models/slow/production/predict")

        async def two() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=30) as http:
                first = asyncio.create_task(http.post(url, json={}))
                await asyncio.sleep(0.1)
                second = await http.post(url, json={})
                return [await first, second]

        timed_out, refused = asyncio.run(two())
        assert refused.status_code == 503 and "too many" in refused.json()["error"]
        assert timed_out.status_code == 503 and "within 0.5 s" in timed_out.json()["error"]
        for response in (timed_out, refused):
            assert int(response.headers["retry-after"]) >= 1
        # The parked request did wake the deployment: once loaded, it answers.
        wait_for(lambda: httpx.post(url, json={}).status_code == 200, 30, "the woken replica")
        started = time.monotonic()
        late = httpx.post(url, json={"sleep": 5}, timeout=30)
        assert late.status_code == 504 and "within 1 s" in late.json()["error"]
        assert time.monotonic() - started < 3
    finally:
        platform.close()
