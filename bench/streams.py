"""A small asyncio client that measures streamed responses.

Each of ``concurrency`` connections asks for one stream after another until
the time is up (or ``max_streams`` have been read), decoding HTTP/1.1 chunked
bodies itself so that nothing but the socket sits between it and the server.
Time to first byte is counted from writing the request to the first byte of
the body (the first chunk the model produced).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass

import orjson


@dataclass(frozen=True)
class StreamStats:
    chunks_per_s: float
    ttfb_p50_ms: float
    ttfb_p99_ms: float
    streams: int
    errors: int
    server_cpu_us: float = float("nan")  # server CPU time per stream, filled in by the caller


class StreamError(Exception):
    """The server answered something other than a complete chunked stream."""


class ChunkedDecoder:
    """Incremental decoder of a chunked transfer-encoded body."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._need = 0  # bytes of chunk data still to come
        self._crlf = False  # a chunk's trailing CRLF is still to come
        self.payload = bytearray()
        self.done = False

    def feed(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        pos = 0
        while not self.done:
            if self._need:
                take = min(self._need, len(buffer) - pos)
                if take <= 0:
                    break
                self.payload += buffer[pos : pos + take]
                pos += take
                self._need -= take
                if self._need:
                    break
                self._crlf = True
            if self._crlf:
                if len(buffer) - pos < 2:
                    break
                pos += 2
                self._crlf = False
            end = buffer.find(b"\r\n", pos)
            if end < 0:
                break
            size = int(bytes(buffer[pos:end]).split(b";")[0], 16)
            pos = end + 2
            if size == 0:
                self.done = True
            self._need = size
        del buffer[:pos]


def build_request(port: int, path: str, body: dict[str, object]) -> bytes:
    payload = orjson.dumps(body)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


async def read_stream(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[float, bytes]:
    """Send one request and read its streamed answer: (seconds to first body byte, body)."""
    started = time.perf_counter()
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = head.split(b" ", 2)[1]
    if status != b"200":
        raise StreamError(f"status {status.decode()}: {head[:200]!r}")
    if b"transfer-encoding: chunked" not in head.lower():
        raise StreamError(f"not a chunked stream: {head[:300]!r}")
    decoder = ChunkedDecoder()
    first_byte = 0.0
    while not decoder.done:
        data = await reader.read(65536)
        if not data:
            raise StreamError("the connection closed inside the stream")
        decoder.feed(data)
        if not first_byte and decoder.payload:
            first_byte = time.perf_counter() - started
    return first_byte, bytes(decoder.payload)


async def measure_streams(
    port: int,
    path: str,
    body: dict[str, object],
    chunks: int,
    concurrency: int,
    duration: float,
    max_streams: int = 100_000,
) -> StreamStats:
    """Read streams over ``concurrency`` connections for ``duration`` seconds."""
    request = build_request(port, path, body)
    ttfbs: list[float] = []
    errors = 0
    deadline = time.perf_counter() + duration
    budget = [max_streams]

    async def client() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < deadline and budget[0] > 0:
                budget[0] -= 1
                try:
                    ttfb, payload = await asyncio.wait_for(
                        read_stream(reader, writer, request), timeout=duration + 10
                    )
                except (StreamError, TimeoutError, OSError, asyncio.IncompleteReadError):
                    errors += 1
                    return
                if payload.count(b"tok") != chunks:
                    errors += 1
                    return
                ttfbs.append(ttfb)
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    if not ttfbs:
        return StreamStats(0.0, float("nan"), float("nan"), 0, errors)
    ordered = sorted(ttfbs)
    return StreamStats(
        chunks_per_s=len(ttfbs) * chunks / elapsed,
        ttfb_p50_ms=statistics.median(ordered) * 1000,
        ttfb_p99_ms=ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
        streams=len(ttfbs),
        errors=errors,
    )


def run_streams(
    port: int,
    path: str,
    body: dict[str, object],
    chunks: int,
    concurrency: int,
    duration: float,
) -> StreamStats:
    """``measure_streams`` on a fresh uvloop event loop."""
    import uvloop

    return uvloop.run(measure_streams(port, path, body, chunks, concurrency, duration))
