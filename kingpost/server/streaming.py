"""Streaming a hook's generator to the client.

Production and delivery are decoupled but live in one object (``HookStream``):
its producer pulls the generator (inside the concurrency slot) into a
ChunkChannel, and its delivery loop sends what the channel holds. The channel
is bounded (``HIGH_WATER`` bytes): past it the producer waits, so a client that
reads slowly slows the generator down instead of piling the stream up in memory,
and one that stops reading is cut by the connection's send timeout
(``kingpost.connection``), which stops the producer and frees the slot. A sync
generator is pulled by one worker thread for its whole life (not one thread hop
per chunk), and wakes the event loop at most once per batch of chunks.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

import orjson

from kingpost.errors import (
    ClientDisconnectedError,
    RequestTimeoutError,
    StreamReadTimeoutError,
)
from kingpost.logs import response_abandoned
from kingpost.server.errors import user_exc_info
from kingpost.server.exchange import request_id_headers
from kingpost.server.replies import EVENT_STREAM

if TYPE_CHECKING:
    from kingpost.server.exchange import Exchange

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
# Bytes a stream may hold between its producer and the client before the producer waits.
HIGH_WATER = 1 << 20
_OBJECT_SIZE = 64  # what a chunk that is neither text nor bytes counts for


def _size(item: Any) -> int:
    if isinstance(item, bytes | str | bytearray):
        return len(item)
    if item is END or item is STOPPED or isinstance(item, StreamFailure):
        return 0
    return _OBJECT_SIZE


class StreamResult:
    """A hook returned a generator: what to stream and how to free its slot."""

    __slots__ = ("on_done", "source")

    def __init__(self, source: Any, on_done: Callable[[], None] | None) -> None:
        self.source = source
        self.on_done = on_done


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
    """A single-consumer queue fed from the event loop or from one thread, bounded in bytes.

    ``push`` never blocks; a producer asks ``full`` after pushing and then waits
    for room (``wait_room`` on the loop, ``wait_room_threadsafe`` in a thread).
    Each byte count is written by one side only, so no lock is needed.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, high_water: int = HIGH_WATER) -> None:
        self._loop = loop
        self._items: deque[Any] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._wake_pending = False
        self._high_water = high_water
        self._pushed = 0  # bytes, written by the producer only
        self._pulled = 0  # bytes, written by the consumer only
        self._room = threading.Event()
        self._room.set()
        self._room_waiter: asyncio.Future[None] | None = None

    @property
    def full(self) -> bool:
        return self._pushed - self._pulled >= self._high_water

    async def wait_room(self) -> None:
        """Until the consumer has taken enough (a producer on the event loop)."""
        while self.full:
            self._room_waiter = self._loop.create_future()
            try:
                await self._room_waiter
            finally:
                self._room_waiter = None

    def wait_room_threadsafe(self, stopped: Callable[[], bool]) -> None:
        """Until there is room or ``stopped()`` (a producer thread)."""
        while self.full and not stopped():
            self._room.clear()
            if not self.full:  # taken between the check and the clear
                break
            self._room.wait(0.05)

    def open_room(self) -> None:
        """Wake a waiting producer (room was made, or it is being stopped)."""
        self._room.set()
        waiter = self._room_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def push(self, item: Any) -> None:
        """Add an item; event-loop thread only."""
        self._items.append(item)
        self._pushed += _size(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def push_threadsafe(self, item: Any) -> None:
        """Add an item from a worker thread; at most one loop wake-up is pending."""
        self._items.append(item)
        self._pushed += _size(item)
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
        item = items.popleft()
        self._pulled += _size(item)
        producer_waits = not self._room.is_set() or self._room_waiter is not None
        if producer_waits and not self.full:
            self.open_room()
        return item


class HookStream:
    """A hook's generator on its way to the client: its producer and its consumer.

    Creating it starts pulling the generator into a channel (inside the hook's
    concurrency slot, which ``on_done`` frees once the generator is closed); the
    client leaving stops it. Then one of the three ways to deliver it:

        stream = HookStream(result, ex, threads)
        await stream.open(request_timeout, read_timeout)   # the first item, before any response
        await stream.send(ex, EVENT_STREAM, read_timeout)
        # or, for Accept: application/json on predict:
        text = await stream.gather(read_timeout)
    """

    __slots__ = ("_finished", "_first", "_on_done", "_stopped", "_task", "channel")

    def __init__(self, result: StreamResult, ex: Exchange, executor: Executor) -> None:
        loop = asyncio.get_running_loop()
        self.channel = ChunkChannel(loop)
        self._on_done = result.on_done
        self._stopped = False
        self._finished = False
        self._first: Any = None
        self._task: asyncio.Task[None] | None = None
        source = result.source
        if isinstance(source, AsyncIterator):
            self._task = loop.create_task(self._pump_async(source))  # type: ignore[arg-type]
        else:
            context = contextvars.copy_context()
            executor.submit(context.run, self._pump_sync, source, loop)
        ex.on_disconnect(self._on_disconnect)
        ex.begin_wait()

    def _on_disconnect(self) -> None:
        self.stop()
        self.channel.push(STOPPED)

    def stop(self) -> None:
        """Stop pulling: cancel an async generator, let a sync one be closed by its thread."""
        if self._finished:
            return
        self._stopped = True
        self.channel.open_room()
        if self._task is not None and not self._task.done():
            self._task.cancel()

    # -- consuming -------------------------------------------------------------

    async def open(self, timeout: float, read_timeout: float | None = None) -> None:
        """Wait for the first item, at most ``timeout`` (and ``read_timeout``) seconds.

        Waiting before the response begins means a failure before any output is a
        proper error reply, not a cut-off stream.
        """
        limit = timeout if read_timeout is None else min(timeout, read_timeout)
        try:
            item = await self.channel.pull(limit)
        except TimeoutError:
            self.stop()
            if limit < timeout:
                raise StreamReadTimeoutError(_no_chunk(limit)) from None
            raise RequestTimeoutError(
                f"the request ran past the timeout of {timeout:g} s"
            ) from None
        except BaseException:
            self.stop()
            raise
        if isinstance(item, StreamFailure):
            raise item.exc
        if item is STOPPED:
            raise ClientDisconnectedError("client disconnected")
        self._first = item

    async def send(
        self,
        ex: Exchange,
        media_type: bytes,
        read_timeout: float,
        past_deadline: bytes | None = None,
    ) -> None:
        """Send the opened stream as the response body, chunk by chunk.

        Past the client's deadline (``Request-Timeout-Ms`` / ``Request-Deadline-Ms``)
        the stream is stopped (its generator closed, which stops an engine's
        generation) and ends with ``past_deadline``, the route's terminal error event,
        or, without one, unfinished.
        """
        ex.status = 200
        headers = [(b"content-type", media_type), *request_id_headers(ex.request_id)]
        if media_type == EVENT_STREAM:
            headers += [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
        send = ex.send
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        pull = self.channel.pull
        item = self._first
        deadline = ex.client_deadline
        clock = asyncio.get_running_loop().time
        try:
            while item is not END:
                if item is STOPPED:
                    return
                if isinstance(item, StreamFailure):
                    exc = item.exc
                    logger.error(
                        "the stream failed after it began: %s: %s",
                        type(exc).__name__,
                        exc,
                        exc_info=user_exc_info(exc),
                    )
                    _abandon(ex)
                    return
                body = chunk_bytes(item)
                await send({"type": "http.response.body", "body": body, "more_body": True})
                wait = read_timeout if deadline is None else min(read_timeout, deadline - clock())
                try:
                    item = await pull(max(wait, 0.0))
                except TimeoutError:
                    if wait >= read_timeout:
                        logger.error("%s: ending the stream unfinished", _no_chunk(read_timeout))
                        _abandon(ex)
                        return
                    logger.info("the stream ran past the client's deadline: stopping it")
                    self.stop()
                    if past_deadline is None:
                        _abandon(ex)
                        return
                    await send(
                        {"type": "http.response.body", "body": past_deadline, "more_body": True}
                    )
                    break
        finally:
            self.stop()
        ex.finished = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def gather(self, read_timeout: float) -> str:
        """All chunks joined into one string (for a client that asked for JSON)."""
        parts: list[bytes] = []
        pull = self.channel.pull
        try:
            while True:
                try:
                    item = await pull(read_timeout)
                except TimeoutError:
                    raise StreamReadTimeoutError(_no_chunk(read_timeout)) from None
                if item is END:
                    break
                if item is STOPPED:
                    raise ClientDisconnectedError("client disconnected")
                if isinstance(item, StreamFailure):
                    raise item.exc
                parts.append(chunk_bytes(item))
        finally:
            self.stop()
        return b"".join(parts).decode("utf-8", errors="replace")

    # -- producing -------------------------------------------------------------

    def _is_stopped(self) -> bool:
        return self._stopped

    async def _pump_async(self, source: AsyncGenerator[Any, None]) -> None:
        channel = self.channel
        push = channel.push
        try:
            try:
                async for chunk in source:
                    push(chunk)
                    if channel.full:
                        await channel.wait_room()
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
        channel = self.channel
        push = channel.push_threadsafe
        try:
            for chunk in source:
                if self._stopped:
                    break
                push(chunk)
                if channel.full:
                    channel.wait_room_threadsafe(self._is_stopped)
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


def _no_chunk(read_timeout: float) -> str:
    return f"the stream sent no chunk for {read_timeout:g} s (runtime.streaming_read_timeout)"


def _abandon(ex: Exchange) -> None:
    """End the response unfinished, so the client sees a failure and not an end.

    The reason was logged already; uvicorn's own line about it is dropped.
    """
    ex.finished = True
    response_abandoned.set(True)


async def _close_quietly(closing: Any) -> None:
    try:
        await closing
    except BaseException:
        logger.exception("closing the stream's generator failed")
