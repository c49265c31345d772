"""Relaying one ASGI HTTP request to a replica over the keep-alive pool of ``proxy.upstream``.

The request goes on as it came (method, query, headers less hop-by-hop ones,
body streamed when it arrives in pieces) and each chunk of the reply goes to
the client as soon as the replica writes it. A client that goes away closes
the connection to the replica, which cancels the model's work there; the
watch on the client (a task) only starts once a reply is slow to begin or
streams, so a quick request pays for one timer.

    await relay_http(upstream, scope, receive, send, "/predict", limits)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass

from kingpost.platform.errors import (
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


class _ClientWatch:
    """Cancels ``task`` when the client disconnects (once started)."""

    __slots__ = ("disconnected", "receive", "task", "waiter")

    def __init__(self, receive: Receive) -> None:
        self.receive = receive
        task = asyncio.current_task()
        assert task is not None
        self.task = task
        self.waiter: asyncio.Task[None] | None = None
        self.disconnected = False

    def start(self) -> None:
        if self.waiter is None:
            self.waiter = asyncio.get_running_loop().create_task(self._wait())

    async def _wait(self) -> None:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                self.task.cancel()
                return

    def stop(self) -> None:
        if self.waiter is not None:
            self.waiter.cancel()


async def relay_http(
    upstream: UpstreamPool, scope: Scope, receive: Receive, send: Send, path: str, limits: Limits
) -> None:
    """Forward the request to ``path`` on ``upstream`` and relay the reply to the client."""
    target = _target(path, scope["query_string"])
    headers = [(name, value) for name, value in scope["headers"] if name not in _NOT_UP]
    client = scope.get("client")
    if client:
        headers.append((b"x-forwarded-for", client[0].encode()))
    content_length = _content_length(scope)
    if content_length > limits.max_body:
        raise PayloadTooLargeError(f"the request body is larger than {limits.max_body} bytes")
    watch = _ClientWatch(receive)
    try:
        body, streamed = await _request_body(receive, scope, limits.max_body, watch)
        length = content_length if content_length >= 0 else None
        timer = None
        if not streamed:
            timer = asyncio.get_running_loop().call_later(WATCH_AFTER, watch.start)
        try:
            async with asyncio.timeout(limits.timeout):
                response = await upstream.request(
                    scope["method"].encode(), target, headers, body, length
                )
        except UpstreamConnectError as exc:
            raise ReplicaUnreachableError(str(exc)) from None
        except UpstreamError as exc:
            raise ReplicaFailedError(f"the replica failed while answering: {exc}") from None
        except TimeoutError:
            raise GatewayTimeoutError(
                f"no reply from the model within {limits.timeout:g} s"
            ) from None
        finally:
            if timer is not None:
                timer.cancel()
        try:
            await _relay_reply(response, send, watch)
        finally:
            response.release()
    except asyncio.CancelledError:
        if watch.disconnected:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            raise ClientGone() from None
        raise
    finally:
        watch.stop()


async def _relay_reply(response: UpstreamResponse, send: Send, watch: _ClientWatch) -> None:
    headers = [(name, value) for name, value in response.headers if name not in _NOT_DOWN]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    if not response.complete:
        watch.start()  # more is coming: notice the client leaving meanwhile
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


def _content_length(scope: Scope) -> int:
    for name, value in scope["headers"]:
        if name == b"content-length":
            with contextlib.suppress(ValueError):
                return int(value)
    return -1


async def _request_body(
    receive: Receive, scope: Scope, max_body: int, watch: _ClientWatch
) -> tuple[bytes | AsyncIterator[bytes] | None, bool]:
    """The body as bytes when it came in one message, else a stream; and whether streamed."""
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientGone()
    body: bytes = message.get("body", b"")
    if message.get("more_body"):
        return _stream_body(receive, body, max_body, watch), True
    if len(body) > max_body:
        raise PayloadTooLargeError(f"the request body is larger than {max_body} bytes")
    if not body and scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS"):
        return None, False  # no body: do not invent a Content-Length for a GET
    return body, False


async def _stream_body(
    receive: Receive, first: bytes, max_body: int, watch: _ClientWatch
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
    watch.start()  # only now is ``receive`` free to watch for the client leaving
