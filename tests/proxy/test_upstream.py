"""The keep-alive pool that forwards to a custom server, against scripted raw HTTP servers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from kingpost.proxy.upstream import UpstreamConnectError, UpstreamError, UpstreamPool
from kingpost.testing import free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            await reader.readexactly(int(line.split(b":")[1]))
    return head


async def serve(handler: Handler) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def read_all(pool: UpstreamPool, method: bytes = b"GET", body: bytes | None = None) -> bytes:
    response = await pool.request(method, b"/", [], body)
    parts = []
    while True:
        data, end = await response.take()
        parts.append(data)
        if end:
            break
    response.release()
    return b"".join(parts)


async def test_a_connection_is_kept_alive_and_reused() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while not reader.at_eof():
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                break
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        writer.close()

    server, port = await serve(handler)
    async with server:
        pool = UpstreamPool("127.0.0.1", port)
        assert await read_all(pool) == b"ok"
        assert await read_all(pool, b"POST", b'{"x": 1}') == b"ok"
        assert connections == 1
        pool.close()


async def test_a_body_delimited_by_the_end_of_the_connection_is_read_whole() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nfirst ")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"second")
        writer.close()

    server, port = await serve(handler)
    async with server:
        assert await read_all(UpstreamPool("127.0.0.1", port)) == b"first second"


async def test_chunked_pieces_come_as_they_are_sent() -> None:
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await release.wait()
        writer.write(b"6\r\n world\r\n0\r\n\r\n")
        await writer.drain()

    server, port = await serve(handler)
    async with server:
        response = await UpstreamPool("127.0.0.1", port).request(b"GET", b"/", [], None)
        assert await response.take() == (b"hello", False)  # before the rest exists
        release.set()
        rest, end = b"", False
        while not end:
            data, end = await response.take()
            rest += data
        assert rest == b" world"
        response.release()


async def test_a_head_reply_ends_after_its_headers() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    server, port = await serve(handler)
    async with server:
        pool = UpstreamPool("127.0.0.1", port)
        response = await asyncio.wait_for(pool.request(b"HEAD", b"/", [], None), 2)
        assert (b"content-length", b"1234") in response.headers
        assert await asyncio.wait_for(response.take(), 2) == (b"", True)


async def test_a_streamed_body_with_a_known_length_keeps_it() -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()

    async def body() -> AsyncIterator[bytes]:
        yield b"abc"
        yield b"def"

    server, port = await serve(handler)
    async with server:
        pool = UpstreamPool("127.0.0.1", port)
        response = await pool.request(b"PUT", b"/x?y=1", [(b"x-a", b"1")], body(), length=6)
        assert response.status == 204
        assert await response.take() == (b"", True)
    assert seen[0].startswith(b"PUT /x?y=1 HTTP/1.1\r\nhost: 127.0.0.1:")
    assert b"content-length: 6\r\n" in seen[0]
    assert b"x-a: 1\r\n" in seen[0]


async def test_a_get_meeting_a_closed_kept_alive_connection_is_sent_again() -> None:
    answered = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal answered
        await read_request(reader)
        answered += 1
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        # Read the next request, then drop the connection without a word.
        with contextlib.suppress(asyncio.IncompleteReadError):
            await read_request(reader)
        writer.transport.abort()

    server, port = await serve(handler)
    async with server:
        pool = UpstreamPool("127.0.0.1", port)
        assert await read_all(pool) == b"ok"
        assert await read_all(pool) == b"ok"
        assert answered == 2
        with pytest.raises(UpstreamError):  # a POST is not sent twice
            await read_all(pool, b"POST", b"{}")


async def test_nothing_listening_is_a_connect_error() -> None:
    with pytest.raises(UpstreamConnectError):
        await UpstreamPool("127.0.0.1", free_port()).request(b"GET", b"/", [], None)
