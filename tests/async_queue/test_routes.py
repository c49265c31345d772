"""The route handlers in process: outputs not kept, purged requests, the reply shapes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from kingpost.async_queue.routes import (
    AsyncRoutes,
    QueueTarget,
)
from kingpost.async_queue.signing import WebhookSigner
from kingpost.async_queue.store import AsyncStore
from kingpost.async_queue.webhooks import WebhookSender
from kingpost.async_queue.worker import AsyncWorker, WorkerSettings
from kingpost.errors import AsyncRequestNotFoundError, PayloadTooLargeError, ResultGoneError

TARGET = QueueTarget("m/d", "m", "d")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[AsyncStore]:
    store = AsyncStore(f"sqlite:///{tmp_path / 'queue.db'}")
    yield store
    store.close()


async def echo(request_id: str, body: bytes, cancelled: asyncio.Event) -> bytes:
    return b'{"echo":' + body + b"}"


async def run_until_settled(routes: AsyncRoutes, request_id: str) -> dict[str, object]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status = orjson.loads((await routes.status(request_id)).body)
        if status["status"] not in ("QUEUED", "IN_PROGRESS"):
            return dict(status)
        await asyncio.sleep(0.02)
    raise AssertionError("not settled")


async def test_an_output_not_kept_answers_410(store: AsyncStore) -> None:
    settings = WorkerSettings(queue="m/d", poll_interval=0.05, keep_outputs=False)
    worker = AsyncWorker(store, echo, WebhookSender(WebhookSigner([])), settings)
    routes = AsyncRoutes(store, TARGET, on_submit=worker.wake)
    await worker.start()
    reply = await routes.submit(b'{"model_input": {"x": 1}}')
    request_id = orjson.loads(reply.body)["request_id"]
    assert (await run_until_settled(routes, request_id))["status"] == "SUCCEEDED"
    await worker.stop()
    with pytest.raises(ResultGoneError, match="keep_outputs"):
        await routes.result(request_id)


async def test_a_kept_output_is_the_models_own_json(store: AsyncStore) -> None:
    settings = WorkerSettings(queue="m/d", poll_interval=0.05)
    worker = AsyncWorker(store, echo, WebhookSender(WebhookSigner([])), settings)
    routes = AsyncRoutes(store, TARGET, on_submit=worker.wake)
    await worker.start()
    reply = await routes.submit(b'{"model_input": [1, "two"]}')
    assert reply.status == 201
    request_id = orjson.loads(reply.body)["request_id"]
    await run_until_settled(routes, request_id)
    await worker.stop()
    result = await routes.result(request_id)
    assert (result.status, orjson.loads(result.body)) == (200, {"echo": [1, "two"]})


async def test_a_purged_request_is_unknown(store: AsyncStore) -> None:
    settings = WorkerSettings(queue="m/d", poll_interval=0.05)
    worker = AsyncWorker(store, echo, WebhookSender(WebhookSigner([])), settings)
    routes = AsyncRoutes(store, TARGET, on_submit=worker.wake)
    await worker.start()
    request_id = orjson.loads((await routes.submit(b'{"model_input": 1}')).body)["request_id"]
    await run_until_settled(routes, request_id)
    await worker.stop()
    assert store.purge("m/d", time.time() + 1) == 1  # past its retention
    with pytest.raises(AsyncRequestNotFoundError):
        await routes.status(request_id)


async def test_the_body_limit_is_configurable(store: AsyncStore) -> None:
    routes = AsyncRoutes(store, TARGET, max_body_bytes=64)
    with pytest.raises(PayloadTooLargeError, match="64"):
        await routes.submit(b'{"model_input": "' + b"x" * 100 + b'"}')
