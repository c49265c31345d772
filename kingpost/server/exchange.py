"""One HTTP request/response exchange at the ASGI level.

Holds what a request needs on the hot path: its id, its body, a watch on the
client's connection so that work for a departed client can be stopped, and the
deadline of the model's work. The watch (a task) and the deadline (a timer) are
only set up once the request has to wait for something: a hook that returns
without suspending costs neither.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from kingpost.errors import ClientDisconnectedError, PayloadTooLargeError, RequestTimeoutError

Scope = dict[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_DISCONNECT: Message = {"type": "http.disconnect"}


class _RequestIds:
    """Unique ids without a system call each: a random per-process prefix and a counter.

    They look like ``uuid4().hex`` (32 hex digits) but are not secret; nothing
    should rely on them being unguessable. Each forked worker draws a new prefix.
    """

    def __init__(self) -> None:
        self.reseed()
        os.register_at_fork(after_in_child=self.reseed)

    def reseed(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count()

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"


new_request_id = _RequestIds().next


def _client_timeout(name: bytes, value: bytes, current: float | None) -> float | None:
    """Seconds left by a ``Request-Timeout-Ms`` (relative) or ``Request-Deadline-Ms``
    (Unix time) header; the shorter of two; an unreadable value is ignored."""
    try:
        milliseconds = float(value)
    except ValueError:
        return current
    if name == b"request-deadline-ms":
        milliseconds -= time.time() * 1000
    seconds = max(milliseconds / 1000, 0.001)
    return seconds if current is None else min(current, seconds)


def request_id_of(scope: Scope) -> str:
    """The id the client sent (``x-request-id``), or a new one; for websockets and mounts."""
    for name, value in scope["headers"]:
        if (name == b"x-request-id" or name == b"x-baseten-request-id") and value:
            return str(value.decode("latin-1")[:128])
    return new_request_id()


def request_id_headers(request_id: str) -> tuple[tuple[bytes, bytes], tuple[bytes, bytes]]:
    """The response headers naming the request id: Kingpost's and the hosted platform's."""
    value = request_id.encode()
    return (b"x-request-id", value), (b"x-baseten-request-id", value)


class Deadline:
    """The request timeout over the model's part of a request, as an async context manager.

    Like ``asyncio.timeout()``, except that its timer is only started by ``arm()``
    (the request is about to wait), so a request that never waits pays for no
    timer. On expiry the task is cancelled and the block raises TimeoutError.
    """

    __slots__ = ("_cancelling", "_fired", "_handle", "_on_expire", "_task", "seconds")

    def __init__(self, seconds: float, on_expire: Callable[[], None] | None = None) -> None:
        self.seconds = seconds
        self._on_expire = on_expire
        self._task: asyncio.Task[Any] | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._fired = False
        self._cancelling = 0

    async def __aenter__(self) -> Deadline:
        task = self._task = asyncio.current_task()
        if task is not None:
            self._cancelling = task.cancelling()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        task, self._task = self._task, None
        # The callback is the exchange's own method: dropping it ends the reference
        # cycle, so the request is freed by its refcount, not by the cycle collector.
        self._on_expire = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._fired and task is not None:
            # Take our cancellation back; if it is what ended the block, say why.
            expired = task.uncancel() <= self._cancelling
            if expired and exc_type is asyncio.CancelledError:
                raise RequestTimeoutError(
                    f"the request ran past the timeout of {self.seconds:g} s"
                ) from None

    def arm(self) -> None:
        """Start the clock (once; only inside the block)."""
        if self._handle is None and self._task is not None:
            self._handle = asyncio.get_running_loop().call_later(self.seconds, self._expire)

    def _expire(self) -> None:
        if self._task is not None:
            self._fired = True
            if self._on_expire is not None:
                self._on_expire()  # model code watching for the client is told to stop
            self._task.cancel()


class CancelOnDisconnect:
    """Inside this block, the client leaving cancels the current task.

    The cancellation then leaves the block as ClientDisconnectedError (a 499),
    unless something else also cancelled the task.

        with CancelOnDisconnect(ex):
            result = await model_coroutine
    """

    __slots__ = ("ex", "task")

    def __init__(self, ex: Exchange) -> None:
        self.ex = ex
        task = asyncio.current_task()
        assert task is not None, "CancelOnDisconnect needs a running task"
        self.task = task

    def _cancel(self) -> None:
        self.task.cancel()

    def __enter__(self) -> None:
        self.ex.on_disconnect(self._cancel)

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        self.ex.remove_disconnect_callback(self._cancel)
        if (
            exc_type is asyncio.CancelledError
            and self.ex.disconnected
            and self.task.uncancel() == 0
        ):
            raise ClientDisconnectedError("client disconnected; its work was cancelled")


class Exchange:
    """Per-request state shared by the route handler, the hook and the stream."""

    __slots__ = (
        "__weakref__",
        "_abandoned",
        "_disconnect_callbacks",
        "_disconnect_event",
        "_loop",
        "_thread_event",
        "_watcher",
        "accept",
        "client_deadline",
        "client_timeout",
        "content_length",
        "content_type",
        "deadline",
        "disconnected",
        "finished",
        "receive",
        "request_id",
        "scope",
        "send",
        "status",
    )

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = scope
        self.receive = receive
        self.send = send
        self.status = 0
        self.disconnected = False
        self.finished = False
        self.deadline: Deadline | None = None
        # Request-Timeout-Ms / Request-Deadline-Ms: the client's own bound, in seconds
        self.client_timeout: float | None = None
        self._loop = asyncio.get_running_loop()
        self._watcher: asyncio.Task[None] | None = None
        self._disconnect_callbacks: list[Callable[[], None]] | None = None
        self._disconnect_event: asyncio.Event | None = None
        self._thread_event: threading.Event | None = None
        self._abandoned = False
        request_id = content_type = accept = b""
        content_length = -1
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value.lower()  # media types are case-insensitive
            elif name == b"content-length":
                content_length = int(value) if value.isdigit() else -1
            elif name == b"accept":
                accept = value.lower()
            elif (name == b"x-request-id" or name == b"x-baseten-request-id") and value:
                request_id = value
            elif name == b"request-timeout-ms" or name == b"request-deadline-ms":
                self.client_timeout = _client_timeout(name, value, self.client_timeout)
        self.request_id = request_id.decode("latin-1")[:128] if request_id else new_request_id()
        # ... and when it ends, in loop time: a stream past it is stopped mid-way
        self.client_deadline: float | None = (
            self._loop.time() + self.client_timeout if self.client_timeout is not None else None
        )
        self.content_type = content_type
        self.content_length = content_length
        self.accept = accept

    async def read_body(self, limit: int) -> bytes:
        """The whole request body; PayloadTooLargeError past ``limit`` bytes."""
        if self.content_length > limit:
            raise PayloadTooLargeError(f"request body is larger than the limit of {limit} bytes")
        message = await self.receive()
        if message["type"] == "http.disconnect":
            self._mark_disconnected()
            raise ClientDisconnectedError("client disconnected")
        body: bytes = message.get("body", b"")
        if not message.get("more_body"):
            if len(body) > limit:
                raise PayloadTooLargeError(
                    f"request body is larger than the limit of {limit} bytes"
                )
            return body
        chunks = [body]
        size = len(body)
        while message.get("more_body"):
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self._mark_disconnected()
                raise ClientDisconnectedError("client disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLargeError(
                    f"request body is larger than the limit of {limit} bytes"
                )
            chunks.append(chunk)
        return b"".join(chunks)

    # -- watching the client -------------------------------------------------

    def within(self, seconds: float) -> Deadline:
        """``async with ex.within(seconds):`` bounds the model's work once it waits (or
        sooner, by the client's ``Request-Timeout-Ms`` / ``Request-Deadline-Ms``)."""
        if self.client_timeout is not None and self.client_timeout < seconds:
            seconds = self.client_timeout
        self.deadline = Deadline(seconds, self.abandon)
        return self.deadline

    def begin_wait(self) -> None:
        """The request is about to wait (a suspended hook, a thread, a slot, a stream).

        From here on the client is watched and the deadline runs.
        """
        self.watch_disconnect()
        if self.deadline is not None:
            self.deadline.arm()

    def arm_deadline(self) -> None:
        """The request is about to wait, but nothing would come of watching the client."""
        if self.deadline is not None:
            self.deadline.arm()

    def watch_disconnect(self) -> None:
        """Start noticing the client leaving (only once the body has been read)."""
        if self._watcher is None and not self.disconnected and not self.finished:
            self._watcher = self._loop.create_task(self._watch())

    def on_disconnect(self, callback: Callable[[], None]) -> None:
        if self.disconnected:
            callback()
        elif self._disconnect_callbacks is None:
            self._disconnect_callbacks = [callback]
        else:
            self._disconnect_callbacks.append(callback)

    def remove_disconnect_callback(self, callback: Callable[[], None]) -> None:
        if self._disconnect_callbacks is not None:
            with contextlib.suppress(ValueError):
                self._disconnect_callbacks.remove(callback)

    def thread_event(self) -> threading.Event:
        """A threading.Event set when the client disconnects, for thread-bound code.

        Callable from any thread; it starts the watch if nothing has yet.
        """
        if self._thread_event is None:
            self._thread_event = threading.Event()
            if self.disconnected or self._abandoned:
                self._thread_event.set()
            elif self._watcher is None and not self.finished:
                self._loop.call_soon_threadsafe(self.watch_disconnect)
        return self._thread_event

    def abandon(self) -> None:
        """The request timed out: tell model code watching for the client to stop.

        Sets the events a hook polls (``request.state.watch_disconnect()``,
        ``request.is_disconnected()``) without taking the client for gone: it still
        gets its 504. A sync hook that stops returns its slot with its thread.
        """
        self._abandoned = True
        if self._thread_event is not None:
            self._thread_event.set()
        if self._disconnect_event is not None:
            self._disconnect_event.set()

    async def receive_after_body(self) -> Message:
        """An ASGI ``receive`` for code handed the request after its body was read.

        Returns ``http.disconnect`` once the client has gone; until then it waits,
        so Starlette's ``Request.is_disconnected()`` polls it without blocking.
        """
        if not self.disconnected:
            if self._disconnect_event is None:
                self._disconnect_event = asyncio.Event()
            self.watch_disconnect()
            await self._disconnect_event.wait()
        return _DISCONNECT

    def close(self) -> None:
        """The response is complete: stop watching."""
        self.finished = True
        watcher, self._watcher = self._watcher, None  # its frame holds us: no cycle via it
        if watcher is not None and not watcher.done():
            watcher.cancel()

    async def _watch(self) -> None:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                break
        if not self.finished:
            self._mark_disconnected()

    def _mark_disconnected(self) -> None:
        if self.disconnected:
            return
        self.disconnected = True
        if self._thread_event is not None:
            self._thread_event.set()
        if self._disconnect_event is not None:
            self._disconnect_event.set()
        callbacks, self._disconnect_callbacks = self._disconnect_callbacks, None
        for callback in callbacks or ():
            callback()

    # -- sending ---------------------------------------------------------------

    async def send_bytes(
        self,
        status: int,
        body: bytes,
        content_type: bytes,
        headers: Iterable[tuple[bytes, bytes]] = (),
    ) -> None:
        """Send a complete response in two ASGI messages."""
        self.status = status
        self.finished = True
        await self.send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", content_type),
                    (b"content-length", str(len(body)).encode()),
                    *request_id_headers(self.request_id),
                    *headers,
                ],
            }
        )
        await self.send({"type": "http.response.body", "body": body})
