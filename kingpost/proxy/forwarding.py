"""Forwarding one HTTP request to the custom server over a keep-alive pool.

The request goes on as it came (method, path, query, headers minus hop-by-hop
ones, body) and the reply comes back the same way. Both bodies are streamed: a
body that arrives in one piece is sent in one piece, a longer one is passed on
as it arrives, and each chunk of the reply is sent to the client as soon as the
server writes it, so event streams stay live. The body limit and the request
timeout of ``runtime:`` apply, and a client that goes away closes the upstream
request.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx

from kingpost.errors import (
    ClientDisconnectedError,
    PayloadTooLargeError,
    UpstreamUnavailableError,
)
from kingpost.server.exchange import Exchange

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
_NOT_FORWARDED_UP = HOP_BY_HOP | {b"host", b"expect", b"x-request-id"}
_NOT_FORWARDED_DOWN = HOP_BY_HOP | {b"date", b"x-request-id"}

CONNECT_TIMEOUT = 10.0
KEEPALIVE_EXPIRY = 4.0  # below uvicorn's default keep-alive of 5 s, the most common child


class Forwarder:
    """Sends requests to ``base_url`` and relays the replies to the client.

        forwarder = Forwarder("http://127.0.0.1:8000", max_body=100 << 20, timeout=1200)
        await forwarder.forward(ex, "/predict")
    """

    def __init__(self, base_url: str, max_body: int, timeout: float) -> None:
        self.base_url = base_url
        self.max_body = max_body
        self.timeout = timeout
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(None, connect=CONNECT_TIMEOUT),
            limits=httpx.Limits(
                max_connections=None,
                max_keepalive_connections=512,
                keepalive_expiry=KEEPALIVE_EXPIRY,
            ),
            trust_env=False,
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    async def forward(self, ex: Exchange, path: str) -> None:
        """Forward ``ex`` to ``path`` on the server (its query string goes along)."""
        task = asyncio.current_task()
        assert task is not None

        def cancel() -> None:
            task.cancel()

        ex.on_disconnect(cancel)
        try:
            async with asyncio.timeout(self.timeout):
                request = await self._build_request(ex, path)
                response = await self._send(request)
                try:
                    await self._relay(ex, response)
                finally:
                    await response.aclose()
        except asyncio.CancelledError:
            # The client left: the cancellation closed the upstream request. Say so
            # with an ordinary error so the request ends as a 499, not a crash.
            if ex.disconnected and task.uncancel() == 0:
                raise ClientDisconnectedError("client disconnected") from None
            raise
        finally:
            ex.remove_disconnect_callback(cancel)

    async def _send(self, request: httpx.Request) -> httpx.Response:
        try:
            return await self.client.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise UpstreamUnavailableError(f"the custom server is unavailable: {exc}") from None
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            raise UpstreamUnavailableError(
                f"the custom server closed the connection: {exc}"
            ) from None

    async def _build_request(self, ex: Exchange, path: str) -> httpx.Request:
        scope = ex.scope
        query = scope["query_string"]
        url = self.base_url + path + ("?" + query.decode("latin-1") if query else "")
        headers = [
            (name, value) for name, value in scope["headers"] if name not in _NOT_FORWARDED_UP
        ]
        headers.append((b"x-request-id", ex.request_id.encode()))
        client = scope.get("client")
        if client:
            headers.append((b"x-forwarded-for", client[0].encode()))
        content = await self._request_body(ex)
        return httpx.Request(scope["method"], url, headers=headers, content=content)

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
        ex.watch_disconnect()
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

    async def _relay(self, ex: Exchange, response: httpx.Response) -> None:
        headers: list[tuple[bytes, bytes]] = [
            (name, value)
            for name, value in response.headers.raw
            if name.lower() not in _NOT_FORWARDED_DOWN
        ]
        headers.append((b"x-request-id", ex.request_id.encode()))
        send = ex.send
        ex.status = response.status_code
        start: dict[str, Any] = {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": headers,
        }
        await send(start)
        async for chunk in response.aiter_raw():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        ex.finished = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _has_header(ex: Exchange, name: bytes) -> bool:
    return any(key == name for key, _ in ex.scope["headers"])
