"""Two platform processes on one PostgreSQL state (the server at 127.0.0.1:5432)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kingpost.platform.settings import PlatformOptions
from kingpost.platform.store import StateStore, metadata
from tests.platform.conftest import PlatformProcess, model_copy, postgres_database, wait_for


@pytest.fixture(scope="module")
def state_url() -> Iterator[str]:
    url = postgres_database("kingpost_platform_test")
    store = StateStore(PlatformOptions(state_url=url).database_url)
    metadata.drop_all(store.engine)  # a clean state for this run
    store.close()
    yield url


def test_the_store_on_postgresql_counts_every_write(state_url: str) -> None:
    store = StateStore(PlatformOptions(state_url=state_url).database_url)
    try:
        before = store.generation()
        model = store.create_model("counted")
        assert store.generation() == before + 1
        snapshot = store.snapshot()
        assert snapshot.find_model("counted") == model
        assert snapshot.environment(model.id, "production").deployment_id is None
    finally:
        store.close()


def test_two_platform_processes_share_one_state(state_url: str, tmp_path: Path) -> None:
    args = ("--state", state_url)
    first = PlatformProcess(tmp_path / "a", *args).start()
    second = PlatformProcess(tmp_path / "b", *args).start()
    try:
        first.admin.create_model("shared")
        first.admin.autoscaling("shared", "production", {"min_replica": 1})
        v1 = first.admin.deploy(model_copy(tmp_path, "v1"), "shared", environment="production")
        first.admin.wait_deployed(v1["id"], "production", timeout=60)

        def answer(platform: PlatformProcess) -> dict[str, object] | None:
            reply = httpx.post(platform.url("/models/shared/production/predict"), json={})
            return reply.json() if reply.status_code == 200 else None

        # The second process learns of the model from the store and runs its own replica.
        from_second = wait_for(lambda: answer(second), 30, "the second process to serve")
        from_first = answer(first)
        assert from_first is not None
        assert from_second["version"] == from_first["version"] == "v1"
        assert from_second["pid"] != from_first["pid"]

        # A promotion through the second process: the first one switches too, when ready.
        v2 = second.admin.deploy(
            model_copy(tmp_path, "v2", **{"model__version.txt": "v2"}), "shared"
        )
        second.admin.wait_deployed(v2["id"], None, timeout=60)
        second.admin.promote(v2["id"], "production")
        second.admin.wait_deployed(v2["id"], "production", timeout=60)
        wait_for(lambda: (answer(first) or {}).get("version") == "v2", 30, "the first to follow")

        # One promotion per environment across processes: the lock is in the store.
        v3 = first.admin.deploy(
            model_copy(tmp_path, "v3", **{"model__version.txt": "v3"}), "shared"
        )
        first.admin.wait_deployed(v3["id"], None, timeout=60)
        first.admin.promote(v3["id"], "production", rolling=True, step_percent=50, step_interval=60)
        refused = second.cli("promote", v1["id"], "--environment", "production")
        assert refused.returncode == 1 and "already under way" in refused.stderr
        first.admin.promotion("shared", "production", "force")
        first.admin.wait_deployed(v3["id"], "production", timeout=60)
        wait_for(lambda: (answer(second) or {}).get("version") == "v3", 30, "the second to follow")
    finally:
        first.close()
        second.close()
