"""The two plug-in points, in process: another replica kind, and async inference routes.

The replica kind here answers in process (as a Ray Serve deployment would answer
through its handle): the platform's routing, parking and autoscaling run unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from kingpost.platform.app import PlatformApp
from kingpost.platform.controller import Platform, Target
from kingpost.platform.replica import Receive, Replica, ReplicaSpec, ReplicaState, Scope, Send
from kingpost.platform.router import Invocation
from kingpost.platform.settings import PlatformOptions
from kingpost.platform.up import build_platform


class InProcessReplica:
    """Answers every request with its spec, after a start-up of ``delay`` seconds."""

    def __init__(self, spec: ReplicaSpec, on_change: Callable[[Replica], None], delay: float):
        self.spec = spec
        self.on_change = on_change
        self.delay = delay
        self.name = f"{spec.deployment_id}/in-process"
        self.in_flight = 0
        self._state = ReplicaState.STARTING

    @property
    def state(self) -> ReplicaState:
        return self._state

    @property
    def error(self) -> str | None:
        return None

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "state": self._state.value}

    def start(self) -> None:
        asyncio.get_running_loop().call_later(self.delay, self._ready)

    def _ready(self) -> None:
        self._state = ReplicaState.READY
        self.on_change(self)

    async def forward(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        body = orjson.dumps({"path": path, "environment": self.spec.environment})
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    async def websocket(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        raise NotImplementedError

    async def stop(self, grace: float) -> None:
        self._state = ReplicaState.STOPPED
        self.on_change(self)


class RecordingAsyncRoutes:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def start(self, platform: Platform) -> None:
        self.calls.append(("start", platform))

    async def stop(self) -> None:
        self.calls.append(("stop", None))

    async def _answer(self, send: Send, body: dict[str, Any]) -> None:
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": orjson.dumps(body)})

    async def submit(self, target: Target, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls.append(("submit", target))
        await self._answer(send, {"request_id": "r1", "deployment_id": target.deployment.id})

    async def queue_status(
        self, target: Target, scope: Scope, receive: Receive, send: Send
    ) -> None:
        self.calls.append(("status", target))
        await self._answer(send, {"model_id": target.model.id, "num_queued_requests": 0})

    async def request(
        self, model: str | None, request_id: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        self.calls.append(("request", (model, request_id, scope["method"])))
        await self._answer(send, {"request_id": request_id})


def _app(tmp_path: Path, routes: RecordingAsyncRoutes | None) -> PlatformApp:
    options = PlatformOptions(home=tmp_path / "home", park_timeout=5)
    return build_platform(
        options,
        factory=lambda spec, on_change: InProcessReplica(spec, on_change, delay=0.2),
        async_routes=routes,
    )


def _deploy(app: PlatformApp, model: str) -> str:
    """A deployment serving production, recorded straight in the store (no promotion)."""
    from kingpost.platform import bundle
    from tests.platform.conftest import MODELS

    platform = app.platform
    record = platform.deploy(model, bundle.pack(MODELS / "versioned"), "test", False)
    env = platform.snapshot.environment(record.model_id, "production")
    platform.store.lock_promotion(env.model_id, "production", "test", 60)
    platform.store.finish_promotion(env.model_id, "production", "test", record.id)
    platform.set_autoscaling(model, "production", {"autoscaling_window": 0.2})
    return record.id


@pytest.fixture
def client_for() -> Callable[[PlatformApp], httpx.AsyncClient]:
    def make(app: PlatformApp) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://p")

    return make


async def test_another_replica_kind_is_parked_for_scaled_from_zero_and_answers(
    tmp_path: Path, client_for: Callable[[PlatformApp], httpx.AsyncClient]
) -> None:
    app = _app(tmp_path, None)
    await app.platform.start()
    try:
        _deploy(app, "echo")
        async with client_for(app) as client:
            pool = app.platform.resolve(Invocation("echo", "environment", "production", "", ""))
            assert pool.replicas == []  # min_replica 0: nothing runs yet
            response = await client.post("/models/echo/environments/production/sync/v1/x")
            assert response.json() == {"path": "/v1/x", "environment": "production"}
            assert len(pool.ready) == 1  # the parked request started one
            missing = await client.post("/models/echo/production/async_predict", json={})
            assert missing.status_code == 404 and "async" in missing.json()["error"]
    finally:
        await app.platform.stop()


async def test_async_routes_get_the_resolved_target_and_the_request_paths(
    tmp_path: Path, client_for: Callable[[PlatformApp], httpx.AsyncClient]
) -> None:
    routes = RecordingAsyncRoutes()
    app = _app(tmp_path, routes)
    await app.platform.start()
    try:
        deployment = _deploy(app, "queued")
        async with client_for(app) as client:
            submitted = await client.post(
                "/production/async_predict", headers={"Host": "model-queued.x"}, json={}
            )
            assert submitted.json() == {"request_id": "r1", "deployment_id": deployment}
            status = await client.get("/models/queued/production/async_queue_status")
            assert status.status_code == 201
            await client.delete("/async_request/abc")
            await client.get("/models/queued/async_request/def")
        kinds = [kind for kind, _ in routes.calls]
        assert kinds == ["submit", "status", "request", "request"]
        target = routes.calls[0][1]
        assert target.environment == "production" and target.model.name == "queued"
        assert routes.calls[2][1] == (None, "abc", "DELETE")
        assert routes.calls[3][1] == ("queued", "def", "GET")
    finally:
        await app.platform.stop()
