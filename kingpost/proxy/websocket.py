"""Relaying an accepted websocket to the custom server's websocket, both ways."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.websockets import WebSocket, WebSocketState
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from kingpost.proxy.forwarding import HOP_BY_HOP

logger = logging.getLogger("kingpost.proxy")

CLOSE_NORMAL = 1000
CLOSE_NO_STATUS = 1005
CLOSE_ABNORMAL = 1006
CLOSE_INTERNAL_ERROR = 1011
CLOSE_TRY_AGAIN = 1013
OPEN_TIMEOUT = 10.0

# The handshake's own headers are made afresh for the second hop.
_NOT_FORWARDED = HOP_BY_HOP | {
    b"host",
    b"x-request-id",
    b"sec-websocket-key",
    b"sec-websocket-version",
    b"sec-websocket-extensions",
    b"sec-websocket-protocol",
    b"sec-websocket-accept",
}


async def relay_websocket(ws: WebSocket, url: str, request_id: str, max_size: int) -> None:
    """Open ``url`` on the server and pass messages between it and ``ws`` until either closes."""
    query = ws.scope.get("query_string", b"")
    if query:
        url += "?" + query.decode("latin-1")
    headers = [
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in ws.scope["headers"]
        if name not in _NOT_FORWARDED
    ]
    headers.append(("x-request-id", request_id))
    try:
        upstream = await connect(
            url,
            additional_headers=headers,
            subprotocols=ws.scope.get("subprotocols") or None,  # type: ignore[arg-type]
            max_size=max_size,
            compression=None,
            open_timeout=OPEN_TIMEOUT,
            ping_interval=None,
            proxy=None,
        )
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        logger.warning("websocket to the custom server failed: %s", exc)
        await ws.close(code=CLOSE_TRY_AGAIN, reason="the custom server is unavailable")
        return
    async with upstream:
        to_server = asyncio.create_task(_client_to_server(ws, upstream))
        to_client = asyncio.create_task(_server_to_client(upstream, ws))
        try:
            await asyncio.wait((to_server, to_client), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (to_server, to_client):
                task.cancel()
            await asyncio.gather(to_server, to_client, return_exceptions=True)


async def _client_to_server(ws: WebSocket, upstream: ClientConnection) -> None:
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            code = message.get("code", CLOSE_NORMAL)
            await upstream.close(code if code not in (CLOSE_NO_STATUS, CLOSE_ABNORMAL) else 1000)
            return
        text = message.get("text")
        await upstream.send(text if text is not None else message.get("bytes", b""))


async def _server_to_client(upstream: ClientConnection, ws: WebSocket) -> None:
    try:
        async for data in upstream:
            if isinstance(data, str):
                await ws.send_text(data)
            else:
                await ws.send_bytes(data)
    except ConnectionClosed:
        pass
    code = upstream.close_code
    if code is None or code == CLOSE_NO_STATUS:
        code = CLOSE_NORMAL
    elif code == CLOSE_ABNORMAL:
        code = CLOSE_INTERNAL_ERROR
    if ws.application_state is not WebSocketState.DISCONNECTED:
        with contextlib.suppress(Exception):  # the client may have left at the same moment
            await ws.close(code=code, reason=upstream.close_reason or "")
