"""HookThreads: sync model code in pool threads, results back on the event loop."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time

import pytest

from kingpost.server.threads import HookThreads

where: contextvars.ContextVar[str] = contextvars.ContextVar("where", default="unset")


async def test_a_call_returns_its_result_from_another_thread() -> None:
    threads = HookThreads(4)
    call = threads.call(lambda a, b: (a + b, threading.current_thread().name), 2, 3)
    total, name = await call.future
    assert total == 5
    assert name.startswith("kingpost-hook")
    threads.shutdown()


async def test_a_call_raises_what_the_function_raised() -> None:
    threads = HookThreads(4)

    def fail() -> None:
        raise ValueError("from the thread")

    with pytest.raises(ValueError, match="from the thread"):
        await threads.call(fail).future
    threads.shutdown()


async def test_a_call_runs_in_a_copy_of_the_callers_context() -> None:
    threads = HookThreads(4)
    where.set("request 7")
    assert await threads.call(where.get).future == "request 7"
    threads.shutdown()


async def test_finished_callbacks_wait_for_an_abandoned_call() -> None:
    threads = HookThreads(4)
    release = threading.Event()
    call = threads.call(release.wait, 5)
    finished: list[str] = []
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.shield(call.future), 0.05)
    call.future.cancel()
    call.when_finished(lambda: finished.append("done"))
    await asyncio.sleep(0.05)
    assert finished == []  # the thread still runs: nothing may be freed yet
    release.set()
    for _ in range(100):
        if finished:
            break
        await asyncio.sleep(0.01)
    assert finished == ["done"]
    threads.shutdown()


async def test_threads_grow_to_the_limit_and_no_further() -> None:
    threads = HookThreads(3)
    gate = threading.Barrier(3, timeout=5)
    calls = [threads.call(gate.wait) for _ in range(3)]  # deadlocks below 3 threads
    await asyncio.gather(*(c.future for c in calls))
    late = threads.call(time.sleep, 0)
    await late.future
    assert len(threads._threads) == 3
    threads.shutdown()


def test_submit_is_a_plain_executor_future() -> None:
    threads = HookThreads(2)
    assert threads.submit(pow, 2, 10).result(timeout=5) == 1024
    assert threads.submit(int, "ff", base=16).result(timeout=5) == 255
    threads.shutdown(wait=True)
    with pytest.raises(RuntimeError):
        threads.submit(pow, 2, 2)
