"""Websocket endpoints: the model's ``websocket`` hook on ``/v1/websocket``.

The core resolves a ``WebSocketRoute`` (the platform's ``.../websocket`` URLs
included), sets the request id and calls the endpoint with a Starlette
``WebSocket``; a path with no route is refused with close code 1003.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

if TYPE_CHECKING:
    from kingpost.server.drain import Drain
    from kingpost.server.lifecycle import ModelLifecycle

logger = logging.getLogger("kingpost.server")

CLOSE_NORMAL = 1000
CLOSE_NO_STATUS = 1005
CLOSE_ABNORMAL = 1006
CLOSE_UNSUPPORTED = 1003
CLOSE_INTERNAL_ERROR = 1011
CLOSE_TRY_AGAIN = 1013


async def refuse(ws: WebSocket, code: int, reason: str) -> None:
    """Accept, then close with ``code``: a close before the handshake reaches the client
    as HTTP 403, and the close code is what tells it why."""
    await ws.accept()
    await ws.close(code=code, reason=reason)


class ModelWebSocket:
    """Hands an accepted websocket to the model's ``websocket(ws)`` hook."""

    def __init__(self, lifecycle: ModelLifecycle, drain: Drain) -> None:
        self.lifecycle = lifecycle
        self.drain = drain

    async def __call__(self, ws: WebSocket) -> None:
        if not self.lifecycle.loaded or self.drain.draining:
            await refuse(ws, CLOSE_TRY_AGAIN, "model is not ready")
            return
        await ws.accept()
        try:
            await self.lifecycle.model.websocket(ws)
        except WebSocketDisconnect as exc:
            client_left(exc.code)
            return
        except Exception as exc:
            if ws.client_state is WebSocketState.DISCONNECTED:
                client_left(CLOSE_ABNORMAL)  # the hook failed because the client was gone
                return
            logger.error("websocket hook raised %s: %s", type(exc).__name__, exc, exc_info=exc)
            await close_once(ws, CLOSE_INTERNAL_ERROR, type(exc).__name__)
            return
        await close_once(ws, CLOSE_NORMAL)


async def close_once(ws: WebSocket, code: int, reason: str = "") -> None:
    """Close unless either side already has; a client gone meanwhile is one INFO line."""
    if ws.application_state is WebSocketState.DISCONNECTED:
        return
    if ws.client_state is WebSocketState.DISCONNECTED:
        client_left(CLOSE_ABNORMAL)
        return
    try:
        await ws.close(code=code, reason=reason)
    except (WebSocketDisconnect, OSError, RuntimeError):
        client_left(CLOSE_ABNORMAL)


def client_left(code: int) -> None:
    """A client that went away without a close frame: one INFO line, no traceback."""
    if code in (CLOSE_ABNORMAL, CLOSE_NO_STATUS):
        logger.info("websocket client left without a close frame (code %d)", code)
