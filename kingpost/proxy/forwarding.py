"""Forwarding one HTTP request to the custom server over a keep-alive pool (``upstream``).

The request goes on as it came (method, path, query, headers minus hop-by-hop
ones, body) and the reply comes back the same way. Both bodies are streamed: a
body that arrives in one piece is sent in one piece, a longer one is passed on
as it arrives, and each chunk of the reply is sent to the client as soon as the
server writes it, so event streams stay live. The body limit and the request
timeout of ``runtime:`` apply (the timeout until the reply begins, then
``streaming_read_timeout`` between pieces of it, as for streams of a model),
and a client that goes away closes the upstream request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from urllib.parse import unquote

from kingpost.errors import (
    ClientDisconnectedError,
    InvalidInputError,
    PayloadTooLargeError,
    RequestTimeoutError,
    UpstreamUnavailableError,
)
from kingpost.proxy.upstream import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamPool,
    UpstreamResponse,
)
from kingpost.server.exchange import CancelOnDisconnect, Exchange, request_id_headers

logger = logging.getLogger("kingpost.proxy")

# RFC 9110 section 7.6.1, plus headers that only describe this hop's framing.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Not forwarded either way: the host is the child's; 100-continue was answered
# here; the date and request id are Kingpost's own (the id is sent on as resolved).
_NOT_FORWARDED_UP = HOP_BY_HOP | {b"host", b"expect", b"x-request-id", b"content-length"}
_NOT_FORWARDED_DOWN = HOP_BY_HOP | {b"date", b"x-request-id", b"x-baseten-request-id"}
# How long a request waits for the head of its reply before the client is watched.
WATCH_AFTER = 0.05


class Forwarder:
    """Sends requests to the server on ``port`` and relays the replies to the client.

    forwarder = Forwarder(8000, max_body=100 << 20, timeout=1200, read_timeout=60)
    await forwarder.forward(ex, "/predict")
    """

    def __init__(self, port: int, max_body: int, timeout: float, read_timeout: float) -> None:
        self.pool = UpstreamPool("127.0.0.1", port)
        self.max_body = max_body
        self.timeout = timeout
        self.read_timeout = read_timeout

    def close(self) -> None:
        self.pool.close()

    async def forward(self, ex: Exchange, path: str) -> None:
        """Forward ``ex`` to ``path`` on the server (its query string goes along)."""
        check_forwarded_path(path)
        # The client leaving cancels this task, which closes the upstream request.
        with CancelOnDisconnect(ex):
            try:
                async with asyncio.timeout(self.timeout):
                    response = await self._send(ex, path)
            except TimeoutError:
                raise RequestTimeoutError(
                    f"the custom server did not answer within {self.timeout:g} s"
                    " (runtime.request_timeout)"
                ) from None
            try:
                await self._relay(ex, response)
            finally:
                response.release()

    async def _send(self, ex: Exchange, path: str) -> UpstreamResponse:
        scope = ex.scope
        query: bytes = scope["query_string"]
        target = path.encode("latin-1")
        if query:
            target += b"?" + query
        headers = _without_hop_headers(scope["headers"], _NOT_FORWARDED_UP)
        headers.append((b"x-request-id", ex.request_id.encode()))
        client = scope.get("client")
        if client:
            headers.append((b"x-forwarded-for", client[0].encode()))
        body = await self._request_body(ex)
        length = ex.content_length if ex.content_length >= 0 else None
        # A quick reply needs no watch on the client (a task per request); a slow
        # one gets it soon enough to close the upstream request when the client goes.
        # A streamed body starts the watch itself once it has been read.
        watch = None
        if body is None or isinstance(body, bytes):
            watch = asyncio.get_running_loop().call_later(WATCH_AFTER, ex.watch_disconnect)
        try:
            return await self.pool.request(scope["method"].encode(), target, headers, body, length)
        except UpstreamConnectError as exc:
            raise UpstreamUnavailableError(f"the custom server is unavailable: {exc}") from None
        except UpstreamError as exc:
            raise UpstreamUnavailableError(f"the custom server failed to answer: {exc}") from None
        finally:
            if watch is not None:
                watch.cancel()

    async def _request_body(self, ex: Exchange) -> bytes | AsyncIterator[bytes] | None:
        """The body: bytes when it came in one message, else a stream of its chunks."""
        if ex.content_length > self.max_body:
            raise PayloadTooLargeError(
                f"request body is larger than the limit of {self.max_body} bytes"
            )
        message = await ex.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnectedError("client disconnected")
        body: bytes = message.get("body", b"")
        if message.get("more_body"):
            return self._stream_body(ex, body)
        if len(body) > self.max_body:
            raise PayloadTooLargeError(
                f"request body is larger than the limit of {self.max_body} bytes"
            )
        if not body and ex.content_length < 0 and not _has_header(ex, b"transfer-encoding"):
            return None  # no body at all: do not invent a Content-Length for a GET
        return body

    async def _stream_body(self, ex: Exchange, first: bytes) -> AsyncIterator[bytes]:
        size = len(first)
        yield first
        while True:
            message = await ex.receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnectedError("client disconnected")
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise PayloadTooLargeError(
                    f"request body is larger than the limit of {self.max_body} bytes"
                )
            if chunk:
                yield chunk
            if not message.get("more_body"):
                break
        # Only now is ``receive`` free to watch for the client leaving.
        ex.watch_disconnect()

    async def _relay(self, ex: Exchange, response: UpstreamResponse) -> None:
        headers = _without_hop_headers(response.headers, _NOT_FORWARDED_DOWN)
        headers.extend(request_id_headers(ex.request_id))
        send = ex.send
        ex.status = response.status
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        if not response.complete:  # more is coming: notice the client leaving meanwhile
            ex.watch_disconnect()
        take = response.take
        while True:
            try:
                async with asyncio.timeout(self.read_timeout):
                    body, end = await take()
            except TimeoutError:
                # Leave the reply unfinished: the client must not take it for complete.
                logger.warning(
                    "no data from the custom server for %g s (streaming_read_timeout): "
                    "ending the reply",
                    self.read_timeout,
                )
                ex.finished = True
                return
            if end:
                ex.finished = True
                await send({"type": "http.response.body", "body": body, "more_body": False})
                return
            if body:
                await send({"type": "http.response.body", "body": body, "more_body": True})


def check_forwarded_path(path: str) -> None:
    """InvalidInputError (400) for a path that could climb out of where it is sent.

    ``/environments/production/sync/../../etc/passwd`` must not reach the custom
    server as ``/../../etc/passwd``: a ``.`` or ``..`` segment, written plainly or
    percent-encoded (once or twice, ``%2e``, ``%252e``), with ``/`` or ``\\`` as the
    separator, is refused rather than guessed at.
    """
    if not path.startswith("/"):
        raise InvalidInputError("the request path must start with '/'")
    if "." not in path and "%" not in path:
        return  # the usual case: nothing to decode
    decoded = path
    for _ in range(2):
        decoded = unquote(decoded)
        for segment in decoded.replace("\\", "/").split("/"):
            if segment in (".", ".."):
                raise InvalidInputError("the request path has a '.' or '..' segment")


def _without_hop_headers(
    headers: Iterable[tuple[bytes, bytes]], dropped: frozenset[bytes]
) -> list[tuple[bytes, bytes]]:
    """``headers`` less ``dropped`` and less any header the Connection header names."""
    kept = []
    named: set[bytes] = set()
    for name, value in headers:
        if name in dropped:
            if name == b"connection":
                named.update(token.strip().lower() for token in value.split(b","))
        else:
            kept.append((name, value))
    if named:
        kept = [(name, value) for name, value in kept if name not in named]
    return kept


def _has_header(ex: Exchange, name: bytes) -> bool:
    return any(key == name for key, _ in ex.scope["headers"])
