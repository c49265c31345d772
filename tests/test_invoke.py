"""Running a hook's coroutine: started at once, watched only once it waits."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kingpost.errors import ClientDisconnectedError
from kingpost.server.exchange import Exchange
from kingpost.server.invoke import acquire_slot, run_coroutine


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
