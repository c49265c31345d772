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
        except WebSocketDisconnect:
            return
        except Exception as exc:
            logger.error("websocket hook raised %s: %s", type(exc).__name__, exc, exc_info=exc)
            if ws.application_state is not WebSocketState.DISCONNECTED:
                await ws.close(code=CLOSE_INTERNAL_ERROR, reason=type(exc).__name__)
            return
        if ws.application_state is not WebSocketState.DISCONNECTED:
            await ws.close(code=CLOSE_NORMAL)
