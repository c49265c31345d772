"""DynamicBatcher: concurrent callers, one batch function call."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence

import pytest

from kingpost.batching import BatcherClosedError, BatchSizeMismatchError, DynamicBatcher


class RecordingFunction:
    """A real batch function (squares numbers) that records every batch it is given."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.batches: list[list[int]] = []
        self.threads: set[int] = set()
        self.gate = gate

    def __call__(self, items: list[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        self.threads.add(threading.get_ident())
        if self.gate is not None:
            self.gate.wait(timeout=10)
        return [item * item for item in items]


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


async def test_concurrent_submits_run_as_one_batch() -> None:
    fn = RecordingFunction()
    batcher = DynamicBatcher(fn, max_batch_size=8, max_wait_s=0.05)

    results = await asyncio.gather(*(batcher.submit(i) for i in range(8)))

    assert results == [i * i for i in range(8)]
    assert fn.batches == [list(range(8))]
    await batcher.aclose()


async def test_each_caller_gets_its_own_result() -> None:
    batcher = DynamicBatcher(RecordingFunction(), max_batch_size=4, max_wait_s=0.01)

    results = await asyncio.gather(*(batcher.submit(i) for i in range(10)))

    assert results == [i * i for i in range(10)]
    await batcher.aclose()


async def test_batches_never_exceed_max_batch_size() -> None:
    fn = RecordingFunction()
    batcher = DynamicBatcher(fn, max_batch_size=3, max_wait_s=0.01)

    await asyncio.gather(*(batcher.submit(i) for i in range(10)))

    assert max(len(batch) for batch in fn.batches) == 3
    assert sorted(item for batch in fn.batches for item in batch) == list(range(10))
    assert batcher.stats.items == 10
    assert batcher.stats.largest_batch == 3
    await batcher.aclose()


async def test_a_full_batch_starts_without_waiting_for_max_wait() -> None:
    batcher = DynamicBatcher(RecordingFunction(), max_batch_size=4, max_wait_s=30.0)

    started = time.monotonic()
    await asyncio.gather(*(batcher.submit(i) for i in range(4)))

    assert time.monotonic() - started < 5.0
    await batcher.aclose()


async def test_a_lone_item_runs_once_max_wait_has_passed() -> None:
    fn = RecordingFunction()
    batcher = DynamicBatcher(fn, max_batch_size=32, max_wait_s=0.1)

    started = time.monotonic()
    assert await batcher.submit(3) == 9
    elapsed = time.monotonic() - started

    assert 0.09 <= elapsed < 5.0
    assert fn.batches == [[3]]
    await batcher.aclose()


async def test_items_arriving_during_a_batch_form_the_next_batch() -> None:
    gate = threading.Event()
    fn = RecordingFunction(gate)
    batcher = DynamicBatcher(fn, max_batch_size=8, max_wait_s=0.0)

    first = asyncio.ensure_future(batcher.submit(1))
    await wait_until(lambda: len(fn.batches) == 1)
    later = [asyncio.ensure_future(batcher.submit(i)) for i in range(2, 6)]
    await wait_until(lambda: batcher.waiting == 4)
    gate.set()
    await asyncio.gather(first, *later)

    assert fn.batches == [[1], [2, 3, 4, 5]]
    await batcher.aclose()


async def test_the_batch_function_runs_off_the_event_loop() -> None:
    def slow_square(items: list[int]) -> list[int]:
        time.sleep(0.3)
        return [item * item for item in items]

    batcher = DynamicBatcher(slow_square, max_batch_size=1, max_wait_s=0.0)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.ensure_future(tick())
    assert await batcher.submit(2) == 4
    ticker.cancel()

    assert ticks >= 10  # the loop kept running while the batch computed
    await batcher.aclose()


async def test_an_error_in_place_of_a_result_goes_to_that_caller_only() -> None:
    def reject_odd(items: list[int]) -> Sequence[int | BaseException]:
        return [ValueError(f"odd: {i}") if i % 2 else i for i in items]

    batcher = DynamicBatcher(reject_odd, max_batch_size=4, max_wait_s=0.05)

    results = await asyncio.gather(*(batcher.submit(i) for i in range(4)), return_exceptions=True)

    assert results[0] == 0 and results[2] == 2
    assert isinstance(results[1], ValueError) and str(results[1]) == "odd: 1"
    assert isinstance(results[3], ValueError) and str(results[3]) == "odd: 3"
    await batcher.aclose()


async def test_a_failing_batch_is_retried_item_by_item() -> None:
    calls: list[list[int]] = []

    def fails_on_negative(items: list[int]) -> list[int]:
        calls.append(list(items))
        if any(i < 0 for i in items):
            raise ValueError("negative input")
        return [i * 10 for i in items]

    batcher = DynamicBatcher(fails_on_negative, max_batch_size=3, max_wait_s=0.05)

    results = await asyncio.gather(
        batcher.submit(1), batcher.submit(-1), batcher.submit(2), return_exceptions=True
    )

    assert results[0] == 10 and results[2] == 20
    assert isinstance(results[1], ValueError)
    assert calls == [[1, -1, 2], [1], [-1], [2]]
    await batcher.aclose()


async def test_without_isolation_a_failing_batch_fails_every_caller() -> None:
    def always_fails(items: list[int]) -> list[int]:
        raise RuntimeError("model broken")

    batcher = DynamicBatcher(
        always_fails, max_batch_size=2, max_wait_s=0.05, isolate_failures=False
    )

    results = await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)

    assert all(isinstance(r, RuntimeError) for r in results)
    await batcher.aclose()


async def test_a_wrong_number_of_results_is_an_error_for_the_batch() -> None:
    batcher: DynamicBatcher[int, int] = DynamicBatcher(
        lambda items: [0], max_batch_size=2, max_wait_s=0.05
    )

    results = await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)

    assert all(isinstance(r, BatchSizeMismatchError) for r in results)
    await batcher.aclose()


async def test_a_caller_cancelled_while_waiting_is_dropped_from_the_batch() -> None:
    fn = RecordingFunction()
    batcher = DynamicBatcher(fn, max_batch_size=8, max_wait_s=0.2)

    leaving = asyncio.ensure_future(batcher.submit(1))
    staying = asyncio.ensure_future(batcher.submit(2))
    await wait_until(lambda: batcher.waiting == 2)
    leaving.cancel()

    assert await staying == 4
    assert fn.batches == [[2]]
    await batcher.aclose()


async def test_a_caller_cancelled_while_its_batch_runs_does_not_disturb_the_others() -> None:
    gate = threading.Event()
    fn = RecordingFunction(gate)
    batcher = DynamicBatcher(fn, max_batch_size=2, max_wait_s=0.05)

    leaving = asyncio.ensure_future(batcher.submit(1))
    staying = asyncio.ensure_future(batcher.submit(2))
    await wait_until(lambda: len(fn.batches) == 1)
    leaving.cancel()
    gate.set()

    assert await staying == 4
    assert leaving.cancelled()
    assert await batcher.submit(3) == 9  # the room it held was given back
    await batcher.aclose()


async def test_the_queue_is_bounded_and_submit_waits_for_room() -> None:
    gate = threading.Event()
    fn = RecordingFunction(gate)
    batcher = DynamicBatcher(fn, max_batch_size=1, max_wait_s=0.0, max_queue_size=2)

    tasks = [asyncio.ensure_future(batcher.submit(i)) for i in range(4)]
    await wait_until(lambda: len(fn.batches) == 1 and batcher.waiting == 1)
    await asyncio.sleep(0.05)  # time for a wrongly admitted submit to show up

    assert batcher.waiting == 1  # one running, one waiting, two held back in submit
    assert not any(task.done() for task in tasks)
    gate.set()
    assert await asyncio.gather(*tasks) == [0, 1, 4, 9]
    await batcher.aclose()


async def test_submit_many_returns_results_in_order() -> None:
    fn = RecordingFunction()
    batcher = DynamicBatcher(fn, max_batch_size=16, max_wait_s=0.01)

    assert await batcher.submit_many([3, 1, 2]) == [9, 1, 4]
    assert fn.batches == [[3, 1, 2]]
    await batcher.aclose()


async def test_submit_many_larger_than_the_queue_still_completes() -> None:
    batcher = DynamicBatcher(
        RecordingFunction(), max_batch_size=4, max_wait_s=0.0, max_queue_size=3
    )

    assert await batcher.submit_many(range(20)) == [i * i for i in range(20)]
    await batcher.aclose()


async def test_a_closed_batcher_refuses_new_items() -> None:
    batcher = DynamicBatcher(RecordingFunction(), max_batch_size=2, max_wait_s=0.0)
    await batcher.aclose()

    with pytest.raises(BatcherClosedError):
        await batcher.submit(1)


async def test_closing_fails_the_items_still_waiting() -> None:
    batcher = DynamicBatcher(RecordingFunction(), max_batch_size=8, max_wait_s=30.0)
    waiting = asyncio.ensure_future(batcher.submit(1))
    await wait_until(lambda: batcher.waiting == 1)

    await batcher.aclose()

    with pytest.raises(BatcherClosedError):
        await waiting


@pytest.mark.parametrize(
    ("setting", "value"),
    [("max_batch_size", 0), ("max_wait_s", -1.0), ("max_queue_size", 0)],
)
def test_invalid_settings_are_refused(setting: str, value: float) -> None:
    with pytest.raises(ValueError, match=setting):
        DynamicBatcher(RecordingFunction(), **{setting: value})  # type: ignore[arg-type]


def test_a_batcher_can_be_used_from_one_event_loop_after_another() -> None:
    batcher = DynamicBatcher(RecordingFunction(), max_batch_size=4, max_wait_s=0.0)

    assert asyncio.run(batcher.submit(2)) == 4
    assert asyncio.run(batcher.submit(3)) == 9
    asyncio.run(batcher.aclose())
