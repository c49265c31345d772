"""The worker in process, with an invoke of our own: leases, give-back, retries, admission."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from kingpost.async_queue.admission import SyncFirst
from kingpost.async_queue.invoke import InvokeFailure
from kingpost.async_queue.models import Status
from kingpost.async_queue.signing import WebhookSigner
from kingpost.async_queue.store import AsyncStore, NewRequest, requests
from kingpost.async_queue.webhooks import WebhookSender
from kingpost.async_queue.worker import AsyncWorker, WorkerSettings
from kingpost.limits import BoundedSlots

QUEUE = "model/local"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[AsyncStore]:
    store = AsyncStore(f"sqlite:///{tmp_path / 'queue.db'}")
    yield store
    store.close()


def submit(store: AsyncStore, max_attempts: int = 3, delay_ms: int = 50) -> str:
    now = time.time()
    request_id = uuid.uuid4().hex
    store.submit(
        [
            NewRequest(
                id=request_id,
                queue=QUEUE,
                model_id="m",
                deployment_id="d",
                priority=0,
                webhook_endpoint=None,
                model_input=b'{"x":1}',
                created_at=now,
                expires_at=now + 600,
                max_attempts=max_attempts,
                initial_delay_ms=delay_ms,
                max_delay_ms=1000,
            )
        ]
    )
    return request_id


def worker(store: AsyncStore, invoke: object, **settings: object) -> AsyncWorker:
    options = {"queue": QUEUE, "concurrency": 2, "lease_seconds": 0.6, "poll_interval": 0.05}
    options.update(settings)
    return AsyncWorker(
        store,
        invoke,  # type: ignore[arg-type]
        WebhookSender(WebhookSigner([])),
        WorkerSettings(**options),  # type: ignore[arg-type]
    )


async def settle(store: AsyncStore, request_id: str, timeout: float = 10.0) -> Status:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = store.get(request_id)
        assert found is not None
        if found.status not in (Status.QUEUED, Status.IN_PROGRESS):
            return found.status
        await asyncio.sleep(0.02)
    raise AssertionError("not settled")


async def test_work_whose_lease_is_taken_over_is_stopped_and_not_recorded(
    store: AsyncStore,
) -> None:
    started, stopped = asyncio.Event(), asyncio.Event()

    async def invoke(request_id: str, body: bytes, cancelled: asyncio.Event) -> bytes:
        started.set()
        await asyncio.wait_for(cancelled.wait(), 10)
        stopped.set()
        return b'"too late"'

    request_id = submit(store)
    running = worker(store, invoke)
    await running.start()
    await asyncio.wait_for(started.wait(), 10)
    with store.engine.begin() as conn:  # as if its lease ran out and another worker took it
        conn.execute(
            requests.update().where(requests.c.id == request_id).values(lease_owner="other")
        )
    await asyncio.wait_for(stopped.wait(), 10)
    await running.stop()
    found = store.get(request_id)
    assert found is not None
    assert (found.status, found.output) == (Status.IN_PROGRESS, None)


async def test_stopping_gives_unfinished_work_back_without_using_an_attempt(
    store: AsyncStore,
) -> None:
    started = asyncio.Event()

    async def invoke(request_id: str, body: bytes, cancelled: asyncio.Event) -> bytes:
        started.set()
        await asyncio.wait_for(cancelled.wait(), 10)
        raise InvokeFailure(499, "stopped")

    request_id = submit(store)
    running = worker(store, invoke)
    await running.start()
    await asyncio.wait_for(started.wait(), 10)
    await running.stop(grace=0.1)
    with store.engine.begin() as conn:
        row = conn.execute(
            sa.select(requests.c.status, requests.c.attempts).where(requests.c.id == request_id)
        ).one()
    assert (row.status, row.attempts) == ("QUEUED", 0)


async def test_a_503_is_retried_after_back_off_then_succeeds(store: AsyncStore) -> None:
    calls: list[float] = []

    async def invoke(request_id: str, body: bytes, cancelled: asyncio.Event) -> bytes:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise InvokeFailure(503, "loading")
        return b'{"ok":true}'

    request_id = submit(store, delay_ms=100)
    running = worker(store, invoke)
    await running.start()
    assert await settle(store, request_id) is Status.SUCCEEDED
    await running.stop()
    gaps = [later - earlier for earlier, later in itertools.pairwise(calls)]
    assert gaps[0] >= 0.09 and gaps[1] >= 0.19  # 100 ms, then 200 ms


async def test_a_400_is_not_retried(store: AsyncStore) -> None:
    calls = 0

    async def invoke(request_id: str, body: bytes, cancelled: asyncio.Event) -> bytes:
        nonlocal calls
        calls += 1
        raise InvokeFailure(400, "bad input")

    request_id = submit(store)
    running = worker(store, invoke)
    await running.start()
    assert await settle(store, request_id) is Status.FAILED
    await running.stop()
    found = store.get(request_id)
    assert found is not None and found.errors[0]["code"] == "MODEL_INVALID_INPUT"
    assert calls == 1


async def test_no_more_than_the_concurrency_runs_at_once(store: AsyncStore) -> None:
    running_now, most = 0, 0

    async def invoke(request_id: str, body: bytes, cancelled: asyncio.Event) -> bytes:
        nonlocal running_now, most
        running_now += 1
        most = max(most, running_now)
        await asyncio.sleep(0.01)
        running_now -= 1
        return b"1"

    ids = [submit(store) for _ in range(20)]
    running = worker(store, invoke, concurrency=3)
    await running.start()
    for request_id in ids:
        assert await settle(store, request_id) is Status.SUCCEEDED
    await running.stop()
    assert most == 3


async def test_sync_first_leaves_the_last_slot_to_sync_traffic() -> None:
    now = [100.0]
    slots = BoundedSlots(2)
    admission = SyncFirst(lambda: slots, quiet_seconds=0.5, clock=lambda: now[0])
    assert admission.may_start(0) and admission.may_start(1)  # idle: every slot
    assert not admission.may_start(2)
    await slots.acquire()  # a sync request holds one of the core's slots
    assert not admission.may_start(0)  # the other is kept for the next sync request
    slots.release()
    assert admission.may_start(0) and not admission.may_start(1)  # sync was just here
    now[0] += 1.0
    assert admission.may_start(1)  # quiet again: both


async def test_sync_first_counts_async_work_holding_slots_as_its_own() -> None:
    slots = BoundedSlots(2)
    admission = SyncFirst(lambda: slots, quiet_seconds=0.5, clock=lambda: 100.0)
    await slots.acquire()  # the one async request started holds its slot
    assert admission.may_start(1)  # no sync traffic: the second slot is async's too


async def test_sync_first_yields_to_sync_requests_waiting_for_a_slot() -> None:
    slots = BoundedSlots(2)
    admission = SyncFirst(lambda: slots, quiet_seconds=0.0, clock=lambda: 100.0)
    await slots.acquire()
    await slots.acquire()  # two async requests hold both slots
    waiter = asyncio.ensure_future(slots.acquire_queued())  # a sync request waits
    await asyncio.sleep(0)
    assert slots.waiting == 1
    slots.release()  # one async request ends; the slot goes to the sync waiter
    await asyncio.wait_for(waiter, 5)
    assert not admission.may_start(1)
    slots.release()
    slots.release()


async def test_sync_first_with_one_slot_waits_for_sync_to_finish() -> None:
    slots = BoundedSlots(1)
    admission = SyncFirst(lambda: slots, quiet_seconds=0.5, clock=lambda: 0.0)
    await slots.acquire()
    assert not admission.may_start(0)
    slots.release()
    assert admission.may_start(0)


async def test_sync_first_hears_of_a_released_slot() -> None:
    slots = BoundedSlots(1)
    admission = SyncFirst(lambda: slots)
    await slots.acquire()
    changed = asyncio.ensure_future(admission.changed())
    await asyncio.sleep(0)
    assert not changed.done()
    slots.release()
    await asyncio.wait_for(changed, 5)


def test_sync_first_admits_nothing_until_the_model_is_ready() -> None:
    ready = False
    slots: list[BoundedSlots] = []
    admission = SyncFirst(lambda: slots[0] if slots else None, ready=lambda: ready)
    assert not admission.may_start(0)  # not loaded: no slots yet
    slots.append(BoundedSlots(4))
    assert not admission.may_start(0)
    ready = True
    assert admission.may_start(0)
