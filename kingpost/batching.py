"""Dynamic batching: many concurrent callers, one call of a batch function.

A model that is much faster on a batch than on one input at a time (a
transformer forward pass, a GPU kernel) can serve concurrent requests through a
``DynamicBatcher``: each request submits its own item, and the batcher runs the
batch function once for everything that arrived together.

    def embed(texts: list[str]) -> list[Vector]:
        return list(model.encode(texts))

    batcher = DynamicBatcher(embed, max_batch_size=32, max_wait_s=0.005)
    vector = await batcher.submit("hello")  # called from many requests at once

A batch is started when ``max_batch_size`` items are waiting, or when the oldest
waiting item has waited ``max_wait_s``. Batches run one at a time in a worker
thread, so the event loop keeps accepting requests while the model computes;
items that arrive during a batch form the next one.

The batch function takes a list of items and returns one result per item, in
order. An exception instance in place of a result is raised to that item's
caller only. If the function raises for a whole batch, each item is retried on
its own (``isolate_failures``) so that one bad input fails only its own caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from kingpost.errors import BatcherClosedError, BatchSizeMismatchError

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")

BatchFunction = Callable[[list[ItemT]], Sequence[ResultT | BaseException]]


@dataclass(eq=False, slots=True)
class _Waiting(Generic[ItemT, ResultT]):
    """One submitted item and the future its caller awaits."""

    item: ItemT
    future: asyncio.Future[ResultT]
    arrived_at: float


@dataclass(slots=True)
class BatchStats:
    """Counters of what the batcher has run (for metrics and tests)."""

    batches: int = 0
    items: int = 0
    largest_batch: int = 0
    sizes: dict[int, int] = field(default_factory=dict)  # batch size -> how many batches had it

    def record(self, size: int) -> None:
        self.batches += 1
        self.items += size
        self.largest_batch = max(self.largest_batch, size)
        self.sizes[size] = self.sizes.get(size, 0) + 1

    def as_metrics(self) -> dict[str, float]:
        """The counters as ``kingpost_metrics()`` numbers."""
        return {
            "batches_total": self.batches,
            "batched_items_total": self.items,
            "largest_batch": self.largest_batch,
        }


class DynamicBatcher(Generic[ItemT, ResultT]):
    """Collect items from concurrent async callers and run them as batches.

    ``max_queue_size`` bounds the items submitted and not yet answered; a caller
    beyond it waits in ``submit`` until there is room (backpressure). A caller
    cancelled while its item waits is dropped from the batch.

    The batcher works on one event loop at a time: the loop of its first
    ``submit``, or a later one once the earlier has nothing in flight.
    """

    def __init__(
        self,
        fn: BatchFunction[ItemT, ResultT],
        *,
        max_batch_size: int = 32,
        max_wait_s: float = 0.005,
        max_queue_size: int = 1024,
        isolate_failures: bool = True,
        name: str = "kingpost-batch",
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must not be negative, got {max_wait_s}")
        if max_queue_size < 1:
            raise ValueError(f"max_queue_size must be at least 1, got {max_queue_size}")
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queue_size = max_queue_size
        self.isolate_failures = isolate_failures
        self.stats = BatchStats()
        self._fn = fn
        # One thread: batches run one at a time, and thread-bound model state
        # (e.g. torch's per-thread settings) stays on a single thread.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._waiting: deque[_Waiting[ItemT, ResultT]] = deque()
        self._in_flight = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._room = asyncio.Semaphore(max_queue_size)
        self._item_arrived = asyncio.Event()
        self._batch_full = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def waiting(self) -> int:
        """Items submitted and not yet taken into a batch."""
        return len(self._waiting)

    async def submit(self, item: ItemT) -> ResultT:
        """Run ``item`` in the next batch and return its result (or raise its error)."""
        future = await self._enqueue(item)
        return await future

    async def submit_many(self, items: Iterable[ItemT]) -> list[ResultT]:
        """Submit several items at once; results come back in the same order.

        The first error is raised and the request's other items are withdrawn.
        """
        futures: list[asyncio.Future[ResultT]] = []
        try:
            for item in items:
                futures.append(await self._enqueue(item))
            return list(await asyncio.gather(*futures))
        except BaseException:
            for future in futures:
                future.cancel()
            raise

    async def aclose(self) -> None:
        """Stop taking items, fail those still waiting, and stop the worker."""
        self._closed = True
        while self._waiting:
            waiting = self._waiting.popleft()
            if not waiting.future.done():
                waiting.future.set_exception(BatcherClosedError("the batcher is closed"))
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _enqueue(self, item: ItemT) -> asyncio.Future[ResultT]:
        if self._closed:
            raise BatcherClosedError("the batcher is closed")
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._bind(loop)
        await self._room.acquire()
        if self._closed:
            self._room.release()
            raise BatcherClosedError("the batcher is closed")
        self._ensure_worker()
        self._in_flight += 1
        future: asyncio.Future[ResultT] = loop.create_future()
        waiting = _Waiting(item, future, loop.time())
        future.add_done_callback(functools.partial(self._on_answered, waiting))
        self._waiting.append(waiting)
        self._item_arrived.set()
        if len(self._waiting) >= self.max_batch_size:
            self._batch_full.set()
        return future

    def _on_answered(
        self, waiting: _Waiting[ItemT, ResultT], future: asyncio.Future[ResultT]
    ) -> None:
        self._in_flight -= 1
        self._room.release()
        if future.cancelled():
            # The caller went away before its batch was taken: drop the item.
            with contextlib.suppress(ValueError):
                self._waiting.remove(waiting)

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Move to ``loop``: asyncio primitives belong to the loop that first used them."""
        if self._loop is not None and self._in_flight and not self._loop.is_closed():
            raise RuntimeError("this DynamicBatcher is in use on another event loop")
        self._loop = loop
        self._waiting.clear()
        self._in_flight = 0
        self._room = asyncio.Semaphore(self.max_queue_size)
        self._item_arrived = asyncio.Event()
        self._batch_full = asyncio.Event()
        self._worker = None

    def _ensure_worker(self) -> None:
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._work())

    async def _work(self) -> None:
        while True:
            batch = await self._next_batch()
            try:
                await self._run(batch)
            except asyncio.CancelledError:  # closed while a batch ran
                _answer(batch, [BatcherClosedError("the batcher is closed")] * len(batch))
                raise
            except Exception as exc:  # a bug here must not leave callers waiting forever
                _answer(batch, [exc] * len(batch))

    async def _next_batch(self) -> list[_Waiting[ItemT, ResultT]]:
        loop = asyncio.get_running_loop()
        while True:
            while not self._waiting:
                self._item_arrived.clear()
                await self._item_arrived.wait()
            deadline = self._waiting[0].arrived_at + self.max_wait_s
            while self._waiting and len(self._waiting) < self.max_batch_size:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._batch_full.clear()
                try:
                    async with asyncio.timeout(remaining):
                        await self._batch_full.wait()
                except TimeoutError:
                    break
            batch = [self._waiting.popleft() for _ in range(min(self.max_batch_size, self.waiting))]
            batch = [waiting for waiting in batch if not waiting.future.done()]
            if batch:
                return batch

    async def _run(self, batch: list[_Waiting[ItemT, ResultT]]) -> None:
        items = [waiting.item for waiting in batch]
        self.stats.record(len(items))
        loop = asyncio.get_running_loop()
        results = await loop.run_in_executor(self._executor, self._call, items)
        _answer(batch, results)

    def _call(self, items: list[ItemT]) -> Sequence[ResultT | BaseException]:
        """Run the batch function (in the worker thread); never raises."""
        try:
            results = self._fn(items)
        except Exception as exc:
            if len(items) == 1 or not self.isolate_failures:
                return [exc] * len(items)
            return [self._call_one(item) for item in items]
        if len(results) != len(items):
            mismatch = BatchSizeMismatchError(
                f"the batch function returned {len(results)} results for {len(items)} items"
            )
            return [mismatch] * len(items)
        return results

    def _call_one(self, item: ItemT) -> ResultT | BaseException:
        try:
            results = self._fn([item])
        except Exception as exc:
            return exc
        if len(results) != 1:
            return BatchSizeMismatchError(
                f"the batch function returned {len(results)} results for 1 item"
            )
        return results[0]


def _answer(
    batch: Sequence[_Waiting[ItemT, ResultT]], results: Sequence[ResultT | BaseException]
) -> None:
    for waiting, result in zip(batch, results, strict=True):
        if waiting.future.done():  # cancelled while its batch ran
            continue
        if isinstance(result, BaseException):
            waiting.future.set_exception(result)
        else:
            waiting.future.set_result(result)
