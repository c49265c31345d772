"""Streaming a hook's generator to the client.

Production and delivery are decoupled: a producer pulls the generator (inside
the concurrency slot) into a ChunkChannel, and the response loop sends what the
channel holds. A slow reader therefore never holds the slot. A sync generator
is pulled by one worker thread for its whole life (not one thread hop per
chunk), and wakes the event loop at most once per batch of chunks.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator
from concurrent.futures import Executor
from typing import Any

import orjson

logger = logging.getLogger("kingpost.server")


class _End:
    pass


class _Stopped:
    pass


class StreamFailure:
    """An exception raised by the generator, carried through the channel."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


END = _End()
STOPPED = _Stopped()


def chunk_bytes(chunk: Any) -> bytes:
    """Chunks are str or bytes; anything else is sent as JSON."""
    if isinstance(chunk, bytes):
        return chunk
    if isinstance(chunk, str):
        return chunk.encode()
    if isinstance(chunk, bytearray | memoryview):
        return bytes(chunk)
    return orjson.dumps(chunk, option=orjson.OPT_SERIALIZE_NUMPY)


class ChunkChannel:
    """A single-consumer queue fed from the event loop or from one thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._items: deque[Any] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._wake_pending = False

    def push(self, item: Any) -> None:
        """Add an item; event-loop thread only."""
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def push_threadsafe(self, item: Any) -> None:
        """Add an item from a worker thread; at most one loop wake-up is pending."""
        self._items.append(item)
        if not self._wake_pending:
            self._wake_pending = True
            self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        self._wake_pending = False
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def pull(self, timeout: float) -> Any:
        """The next item; TimeoutError if none arrives within ``timeout`` seconds."""
        items = self._items
        while not items:
            self._waiter = self._loop.create_future()
            try:
                async with asyncio.timeout(timeout):
                    await self._waiter
            finally:
                self._waiter = None
        return items.popleft()


class ChunkProducer:
    """Pulls a generator into a channel; ``stop()`` ends it early.

    ``on_done`` runs on the event loop once the generator has been closed: that
    is where the concurrency slot is released.
    """

    def __init__(
        self,
        source: AsyncGenerator[Any, None] | Generator[Any, None, None],
        channel: ChunkChannel,
        executor: Executor,
        on_done: Callable[[], None] | None = None,
    ) -> None:
        self.channel = channel
        self._on_done = on_done
        self._stopped = False
        self._finished = False
        self._task: asyncio.Task[None] | None = None
        loop = asyncio.get_running_loop()
        if isinstance(source, AsyncIterator):
            self._task = loop.create_task(self._pump_async(source))  # type: ignore[arg-type]
        else:
            context = contextvars.copy_context()
            executor.submit(context.run, self._pump_sync, source, loop)

    def stop(self) -> None:
        """Stop pulling: cancel an async generator, let a sync one be closed by its thread."""
        if self._finished:
            return
        self._stopped = True
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def _pump_async(self, source: AsyncGenerator[Any, None]) -> None:
        push = self.channel.push
        try:
            try:
                async for chunk in source:
                    push(chunk)
                self._finished = True
                push(END)
            except asyncio.CancelledError:
                push(STOPPED)
            except Exception as exc:
                self._finished = True
                push(StreamFailure(exc))
            finally:
                await _close_quietly(source.aclose())
        finally:
            if self._on_done is not None:
                self._on_done()

    def _pump_sync(
        self, source: Generator[Any, None, None], loop: asyncio.AbstractEventLoop
    ) -> None:
        push = self.channel.push_threadsafe
        try:
            for chunk in source:
                if self._stopped:
                    break
                push(chunk)
            push(STOPPED if self._stopped else END)
        except Exception as exc:
            push(StreamFailure(exc))
        finally:
            self._finished = True
            try:
                source.close()
            except Exception:
                logger.exception("closing the stream's generator failed")
            if self._on_done is not None:
                # The loop may already be closed during shutdown.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self._on_done)


async def _close_quietly(closing: Any) -> None:
    try:
        await closing
    except BaseException:
        logger.exception("closing the stream's generator failed")
