"""A keep-alive HTTP/1.1 connection pool to the custom server.

The forwarding hot path needs little from a client: write a request, read the
head, pass the body on chunk by chunk, put the connection back. A general
client (httpx) costs a millisecond or more of CPU per request in its pool and
stream layers, more than the servers it sits in front of spend answering; this
pool is an asyncio Protocol with uvicorn's C parser (httptools), so a forwarded
request costs tens of microseconds. It only ever talks to 127.0.0.1.

    pool = UpstreamPool("127.0.0.1", 8000)
    response = await pool.request(b"POST", b"/predict", headers, b'{"x": 1}')
    body, end = await response.take()      # repeat until end
    response.release()
"""

from __future__ import annotations

import asyncio
import collections
import socket
import time
from collections.abc import AsyncIterator
from typing import cast

import httptools

from kingpost.errors import UpstreamConnectError, UpstreamError

Headers = list[tuple[bytes, bytes]]

HIGH_WATER = 1 << 20  # buffered response bytes before the server is asked to pause
LOW_WATER = 1 << 18
IDLE_TIMEOUT = 4.0  # below uvicorn's default keep-alive of 5 s, the most common server
MAX_IDLE = 512


class _NotSent(UpstreamError):
    """The connection was found closed before any of the request was written."""


# Requests that may be sent again when a reused connection turns out to be closed.
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})


class _End:
    pass


_END = _End()


class UpstreamConnection(asyncio.Protocol):
    """One connection; carries one request at a time."""

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.used = False  # has answered a request before: a reuse may meet a stale close
        self._reset()
        self._can_write = asyncio.Event()
        self._can_write.set()

    def _reset(self) -> None:
        self.status = 0
        self.headers: Headers = []
        self.head: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.chunks: collections.deque[bytes | _End | BaseException] = collections.deque()
        self.buffered = 0
        self.complete = False
        self.keep_alive = False
        self.head_only = False
        self.length_known = False
        self.reading_paused = False
        self._waiter: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"the server sent an invalid response: {exc}"))
            self.close()

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.complete:
            return
        if self.head.done() and not self.length_known and exc is None and not self.head_only:
            self.on_message_complete()  # a body delimited by the end of the connection
            return
        self._fail(UpstreamError(f"the server closed the connection ({exc or 'EOF'})"))

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    # -- httptools callbacks ---------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-length" or (name == b"transfer-encoding" and b"chunked" in value):
            self.length_known = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        if self.status in (204, 304) or 100 <= self.status < 200:
            self.length_known = True
        if not self.head.done():
            self.head.set_result(None)
        if self.head_only:  # the parser would wait for a body a HEAD reply never has
            self.keep_alive = False
            self.on_message_complete()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self.reading_paused and self.transport:
            self.reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.complete:
            return
        self.complete = True
        self.chunks.append(_END)
        self._wake()

    # -- used by the pool and the response ---------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if not self.head.done():
            self.head.set_exception(exc)
            self.head.exception()  # retrieved here; the sender re-raises it
        else:
            self.chunks.append(exc)
            self._wake()

    async def write(self, data: bytes, first: bool = False) -> None:
        if self.closed or self.transport is None:
            if first:
                raise _NotSent("the server had closed the connection")
            raise UpstreamError("the server closed the connection")
        self.transport.write(data)
        if not self._can_write.is_set():
            await self._can_write.wait()

    async def take(self) -> tuple[bytes, bool]:
        """All of the body that has arrived (waiting for some), and whether it is the end.

        Pieces that arrived together go on together: nothing waits for more, but
        a reader that fell behind catches up in one step instead of many.
        """
        chunks = self.chunks
        while not chunks:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
            self._waiter = None
        parts: list[bytes] = []
        end = False
        while chunks:
            item = chunks[0]
            if isinstance(item, bytes):
                parts.append(item)
                chunks.popleft()
            elif isinstance(item, _End):
                chunks.popleft()
                end = True
                break
            elif parts:  # a failure after some data: hand over the data first
                break
            else:
                chunks.popleft()
                raise item
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self.buffered -= len(data)
        if self.reading_paused and self.buffered < LOW_WATER and self.transport:
            self.reading_paused = False
            self.transport.resume_reading()
        return data, end

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class UpstreamResponse:
    """The head of a reply; read the body with ``take()`` until the end, then ``release()``."""

    __slots__ = ("_connection", "headers", "status")

    def __init__(self, connection: UpstreamConnection) -> None:
        self._connection = connection
        self.status = connection.status
        self.headers = connection.headers

    @property
    def complete(self) -> bool:
        """The whole reply has arrived (what is left to take is in memory)."""
        return self._connection.complete

    async def take(self) -> tuple[bytes, bool]:
        """The body that has arrived so far, and whether it is complete (see UpstreamConnection)."""
        return await self._connection.take()

    def release(self) -> None:
        """Give the connection back if the reply was read to its end, else close it."""
        self._connection.pool.release(self._connection)


class UpstreamPool:
    """Keep-alive connections to ``host:port``, reused most recent first."""

    def __init__(self, host: str, port: int, connect_timeout: float = 10.0) -> None:
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.host_header = f"{host}:{port}".encode()
        self.idle: list[UpstreamConnection] = []

    async def request(
        self,
        method: bytes,
        target: bytes,
        headers: Headers,
        body: bytes | AsyncIterator[bytes] | None,
        length: int | None = None,
    ) -> UpstreamResponse:
        """Send a request and wait for the head of its reply.

        ``headers`` must not hold Host, Content-Length or Transfer-Encoding:
        the framing is chosen here, from ``body`` and, for a streamed body,
        its announced ``length`` (chunked when None). When a kept-alive
        connection turns out to be closed, the request is sent again on a new
        one if that is safe: nothing was written, or it is idempotent.
        """
        while True:
            connection = await self._acquire()
            try:
                return await self._exchange(connection, method, target, headers, body, length)
            except UpstreamError as exc:
                connection.close()
                replayable = not isinstance(body, AsyncIterator)
                safe = isinstance(exc, _NotSent) or method in IDEMPOTENT
                if connection.used and replayable and safe:
                    continue
                raise
            except BaseException:
                connection.close()
                raise

    async def _exchange(
        self,
        connection: UpstreamConnection,
        method: bytes,
        target: bytes,
        headers: Headers,
        body: bytes | AsyncIterator[bytes] | None,
        length: int | None,
    ) -> UpstreamResponse:
        connection.head_only = method == b"HEAD"
        lines = [method, b" ", target, b" HTTP/1.1\r\nhost: ", self.host_header, b"\r\n"]
        for name, value in headers:
            lines += (name, b": ", value, b"\r\n")
        if isinstance(body, bytes):
            lines += (b"content-length: ", str(len(body)).encode(), b"\r\n\r\n", body)
            await connection.write(b"".join(lines), first=True)
        elif body is None:
            lines.append(b"\r\n")
            await connection.write(b"".join(lines), first=True)
        elif length is not None:
            lines += (b"content-length: ", str(length).encode(), b"\r\n\r\n")
            await connection.write(b"".join(lines), first=True)
            async for chunk in body:
                await connection.write(chunk)
        else:
            lines.append(b"transfer-encoding: chunked\r\n\r\n")
            await connection.write(b"".join(lines), first=True)
            async for chunk in body:
                if chunk:
                    await connection.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            await connection.write(b"0\r\n\r\n")
        await connection.head
        return UpstreamResponse(connection)

    async def _acquire(self) -> UpstreamConnection:
        idle = self.idle
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if not connection.closed and now - connection.idle_since < IDLE_TIMEOUT:
                connection._reset()
                return connection
            connection.close()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, protocol = await loop.create_connection(
                    lambda: UpstreamConnection(self), self.host, self.port
                )
        except (OSError, TimeoutError) as exc:
            raise UpstreamConnectError(
                f"cannot connect to {self.host}:{self.port}: {exc}"
            ) from None
        return protocol

    def release(self, connection: UpstreamConnection) -> None:
        if connection.closed or not connection.complete or not connection.keep_alive:
            connection.close()
            return
        connection.used = True
        connection.idle_since = time.monotonic()
        if len(self.idle) >= MAX_IDLE:
            self.idle.pop(0).close()
        self.idle.append(connection)

    def close(self) -> None:
        for connection in self.idle:
            connection.close()
        self.idle.clear()
