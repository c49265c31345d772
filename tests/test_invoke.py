"""Running a hook's coroutine: started at once, watched only once it waits."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest

from kingpost.errors import ClientDisconnectedError, StreamReadTimeoutError
from kingpost.model.descriptor import describe_hook
from kingpost.server.exchange import Exchange
from kingpost.server.invoke import HookRunner, acquire_slot, run_coroutine
from kingpost.server.streaming import HookStream, StreamResult
from kingpost.server.threads import HookThreads


def make_exchange() -> tuple[Exchange, asyncio.Future[None]]:
    """An exchange whose client 'leaves' when the returned future is resolved."""
    gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def receive() -> dict[str, Any]:
        await gone
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        return None

    scope = {"type": "http", "headers": [], "path": "/predict", "method": "POST"}
    return Exchange(scope, receive, send), gone


async def test_a_coroutine_that_never_suspends_needs_no_watch() -> None:
    ex, _ = make_exchange()

    async def hook() -> str:
        return "done"

    assert await run_coroutine(ex, hook()) == "done"
    assert ex._watcher is None


async def test_a_suspending_coroutine_is_watched_and_returns_its_value() -> None:
    ex, _ = make_exchange()

    async def hook() -> int:
        await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        return 7

    assert await run_coroutine(ex, hook()) == 7
    assert ex._watcher is not None
    ex.close()


async def test_an_exception_after_suspending_reaches_the_caller() -> None:
    ex, _ = make_exchange()

    async def hook() -> None:
        await asyncio.sleep(0)
        raise ValueError("late")

    with pytest.raises(ValueError, match="late"):
        await run_coroutine(ex, hook())
    ex.close()


async def test_a_suspended_coroutine_is_cancelled_when_the_client_leaves() -> None:
    ex, gone = make_exchange()
    seen: list[str] = []

    async def hook() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    asyncio.get_running_loop().call_later(0.02, gone.set_result, None)
    with pytest.raises(ClientDisconnectedError):
        await run_coroutine(ex, hook())
    assert seen == ["cancelled"]


async def test_a_coroutine_may_handle_a_cancellation_and_go_on() -> None:
    ex, _ = make_exchange()

    async def hook() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await asyncio.sleep(0)
            return "cleaned up"
        return "not cancelled"

    task = asyncio.ensure_future(run_coroutine(ex, hook()))
    await asyncio.sleep(0.01)
    task.cancel()
    assert await task == "cleaned up"
    ex.close()


async def test_the_deadline_only_starts_once_the_request_waits() -> None:
    ex, _ = make_exchange()

    async def quick() -> None:
        return None

    async with ex.within(0.05) as deadline:
        await run_coroutine(ex, quick())
        assert deadline._handle is None
    with pytest.raises(TimeoutError):
        async with ex.within(0.05):
            await run_coroutine(ex, asyncio.sleep(10))
    ex.close()


async def test_a_client_that_leaves_while_queued_gives_up_its_slot() -> None:
    ex, gone = make_exchange()
    slot = asyncio.Semaphore(1)
    await slot.acquire()
    asyncio.get_running_loop().call_later(0.02, gone.set_result, None)
    with pytest.raises(ClientDisconnectedError):
        await acquire_slot(ex, slot)
    slot.release()
    assert not slot.locked()


class SyncModel:
    def predict(self, inputs: Any) -> Any:
        return inputs


async def test_a_sync_hook_gives_its_slot_back_when_the_pool_is_shut_down() -> None:
    threads = HookThreads(2)
    threads.shutdown(wait=True)
    slot = asyncio.Semaphore(1)
    hook = describe_hook("SyncModel", "predict", SyncModel.predict)
    runner = HookRunner(hook, SyncModel(), threads, slot)
    ex, _ = make_exchange()
    with pytest.raises(RuntimeError):
        await runner(ex, {"x": 1}, None)
    assert not slot.locked()


async def test_a_queued_sync_call_abandoned_at_shutdown_gives_its_slot_back() -> None:
    threads = HookThreads(1)
    release = threading.Event()
    blocker = threads.submit(release.wait, 10)  # the one thread is busy
    slot = asyncio.Semaphore(1)
    hook = describe_hook("SyncModel", "predict", SyncModel.predict)
    runner = HookRunner(hook, SyncModel(), threads, slot)
    ex, _ = make_exchange()
    call = asyncio.ensure_future(runner(ex, {"x": 1}, None))
    while not slot.locked():  # the call took the slot and is queued behind the blocker
        await asyncio.sleep(0)
    threads.shutdown(wait=False, cancel_futures=True)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(call, 5)
    assert not slot.locked()
    release.set()
    blocker.result(timeout=5)


async def test_a_gathered_stream_that_goes_quiet_is_a_stream_read_timeout() -> None:
    async def quiet() -> AsyncIterator[str]:
        yield "first"
        await asyncio.sleep(10)
        yield "never"

    ex, _ = make_exchange()
    threads = HookThreads(1)
    stream = HookStream(StreamResult(quiet(), None), ex, threads)
    with pytest.raises(StreamReadTimeoutError, match="streaming_read_timeout"):
        await stream.gather(0.05)
    threads.shutdown()
