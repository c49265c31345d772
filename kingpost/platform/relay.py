"""Relaying one ASGI HTTP request to a replica over the keep-alive pool of ``proxy.upstream``.

The request goes on as it came (method, query, headers less hop-by-hop ones,
body streamed when it arrives in pieces) and each chunk of the reply goes to
the client as soon as the replica writes it. A client that goes away closes
the connection to the replica, which cancels the model's work there. The
watch on the client (a task) and the deadline only start once an exchange has
lasted ``WATCH_AFTER``, from one timer per event loop, so a quick request pays
for neither.

    await relay_http(upstream, scope, receive, send, "/predict", limits)
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass

from kingpost.errors import (
    GatewayTimeoutError,
    PayloadTooLargeError,
    ReplicaFailedError,
)
from kingpost.platform.replica import Receive, ReplicaUnreachableError, Scope, Send
from kingpost.proxy.forwarding import HOP_BY_HOP
from kingpost.proxy.upstream import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamPool,
    UpstreamResponse,
)

logger = logging.getLogger("kingpost.platform")

_NOT_UP = HOP_BY_HOP | {b"host", b"expect", b"content-length"}
_NOT_DOWN = HOP_BY_HOP | {b"date", b"server"}
WATCH_AFTER = 0.05  # a reply slower than this to begin gets a watch on the client
_SAFE_PATH = "/:@!$&'()*+,;=-._~"


@dataclass(frozen=True)
class Limits:
    max_body: int = 100 << 20
    timeout: float = 1200.0  # until the reply begins


class ClientGone(Exception):
    """The client disconnected; there is nobody left to answer."""


class _Guard:
    """What a request needs if it turns out slow: a watch on the client (its leaving
    cancels the task) and, until the reply begins, the deadline. Started by the
    loop's ``_Watchdog`` once the exchange has lasted WATCH_AFTER."""

    __slots__ = (
        "_waiter",
        "disconnected",
        "expired",
        "head",
        "reading",
        "receive",
        "started",
        "task",
    )

    def __init__(self, receive: Receive, task: asyncio.Task[None], started: float) -> None:
        self.receive = receive
        self.task = task
        self.started = started
        self.head = False  # the reply has begun: the deadline no longer applies
        self.disconnected = False
        self.expired = False
        self.reading = False  # a streamed body is still being read: ``receive`` is taken
        self._waiter: asyncio.Task[None] | None = None

    def watch(self) -> None:
        if self._waiter is None and not self.reading:
            self._waiter = self.task.get_loop().create_task(self._wait())

    def expire(self) -> None:
        self.expired = True
        self.task.cancel()

    async def _wait(self) -> None:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                self.task.cancel()
                return

    def stop(self) -> None:
        if self._waiter is not None:
            self._waiter.cancel()


class _Watchdog:
    """One timer for every request on a loop, instead of one per request: each tick
    starts the watch of requests older than WATCH_AFTER and ends those past the deadline."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop = loop
        self.timeout = timeout
        self.guards: dict[_Guard, None] = {}
        self._handle: asyncio.TimerHandle | None = None

    def add(self, guard: _Guard) -> None:
        self.guards[guard] = None
        if self._handle is None:
            self._handle = self.loop.call_later(WATCH_AFTER, self._tick)

    def discard(self, guard: _Guard) -> None:
        self.guards.pop(guard, None)

    def _tick(self) -> None:
        now = self.loop.time()
        for guard in list(self.guards):
            age = now - guard.started
            if age < WATCH_AFTER:
                continue
            guard.watch()
            if guard.head:
                del self.guards[guard]  # watched; no deadline once the reply has begun
            elif age >= self.timeout:
                del self.guards[guard]
                guard.expire()
        self._handle = self.loop.call_later(WATCH_AFTER, self._tick) if self.guards else None


_watchdogs: dict[tuple[int, float], _Watchdog] = {}


def _watchdog(loop: asyncio.AbstractEventLoop, timeout: float) -> _Watchdog:
    key = (id(loop), timeout)
    watchdog = _watchdogs.get(key)
    if watchdog is None or watchdog.loop is not loop:
        watchdog = _watchdogs[key] = _Watchdog(loop, timeout)
    return watchdog


async def relay_http(
    upstream: UpstreamPool, scope: Scope, receive: Receive, send: Send, path: str, limits: Limits
) -> int:
    """Forward the request to ``path`` on ``upstream``, relay the reply; its status."""
    target = _target(path, scope["query_string"])
    headers = []
    length = -1
    for name, value in scope["headers"]:
        if name not in _NOT_UP:
            headers.append((name, value))
        elif name == b"content-length":
            length = _content_length(value)
    client = scope.get("client")
    if client:
        headers.append((b"x-forwarded-for", client[0].encode()))
    if length > limits.max_body:
        raise PayloadTooLargeError(f"the request body is larger than {limits.max_body} bytes")
    task = asyncio.current_task()
    assert task is not None
    loop = task.get_loop()
    guard = _Guard(receive, task, loop.time())
    watchdog = _watchdog(loop, limits.timeout)
    try:
        body = await _request_body(receive, scope, limits.max_body, guard)
        watchdog.add(guard)
        try:
            response = await upstream.request(
                scope["method"].encode(), target, headers, body, length if length >= 0 else None
            )
        except UpstreamConnectError as exc:
            raise ReplicaUnreachableError(str(exc)) from None
        except UpstreamError as exc:
            raise ReplicaFailedError(f"the replica failed while answering: {exc}") from None
        guard.head = True
        try:
            await _relay_reply(response, send)
        finally:
            response.release()
        return response.status
    except asyncio.CancelledError:
        if not (guard.disconnected or guard.expired):
            raise
        task.uncancel()
        if guard.expired:
            raise GatewayTimeoutError(
                f"no reply from the model within {limits.timeout:g} s"
            ) from None
        raise ClientGone() from None
    finally:
        watchdog.discard(guard)
        guard.stop()


async def _relay_reply(response: UpstreamResponse, send: Send) -> None:
    headers = [(name, value) for name, value in response.headers if name not in _NOT_DOWN]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    take = response.take
    while True:
        try:
            body, end = await take()
        except UpstreamError as exc:
            # The head has gone out: all that can be done is to end the reply unfinished.
            logger.warning("the replica broke off a reply: %s", exc)
            raise
        if end:
            await send({"type": "http.response.body", "body": body, "more_body": False})
            return
        if body:
            await send({"type": "http.response.body", "body": body, "more_body": True})


def _target(path: str, query: bytes) -> bytes:
    if path.isascii() and " " not in path and "%" not in path and "?" not in path:
        target = path.encode()
    else:
        target = urllib.parse.quote(path, safe=_SAFE_PATH).encode()
    return target + b"?" + query if query else target


def _content_length(value: bytes) -> int:
    try:
        return int(value)
    except ValueError:
        return -1


async def _request_body(
    receive: Receive, scope: Scope, max_body: int, guard: _Guard
) -> bytes | AsyncIterator[bytes] | None:
    """The body as bytes when it came in one message, else a stream of its chunks."""
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientGone()
    body: bytes = message.get("body", b"")
    if message.get("more_body"):
        guard.reading = True
        return _stream_body(receive, body, max_body, guard)
    if len(body) > max_body:
        raise PayloadTooLargeError(f"the request body is larger than {max_body} bytes")
    if not body and scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS"):
        return None  # no body: do not invent a Content-Length for a GET
    return body


async def _stream_body(
    receive: Receive, first: bytes, max_body: int, guard: _Guard
) -> AsyncIterator[bytes]:
    size = len(first)
    yield first
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > max_body:
            raise PayloadTooLargeError(f"the request body is larger than {max_body} bytes")
        if chunk:
            yield chunk
        if not message.get("more_body"):
            break
    guard.reading = False  # only now is ``receive`` free to watch for the client leaving
    guard.watch()
