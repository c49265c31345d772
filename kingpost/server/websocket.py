"""The websocket hook on ``/v1/websocket`` (and the platform's ``.../websocket``)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from kingpost.logs import request_id_var
from kingpost.server.exchange import Receive, Scope, Send
from kingpost.server.routing import split_platform_path

if TYPE_CHECKING:
    from kingpost.server.app import ModelApp

logger = logging.getLogger("kingpost.server")

CLOSE_NORMAL = 1000
CLOSE_UNSUPPORTED = 1003
CLOSE_INTERNAL_ERROR = 1011
CLOSE_TRY_AGAIN = 1013


def _is_websocket_path(path: str) -> bool:
    if path == "/v1/websocket":
        return True
    platform = split_platform_path(path)
    return platform is not None and platform.path == "/v1/websocket"


def _refusal(app: ModelApp, path: str) -> tuple[int, str] | None:
    if not _is_websocket_path(path):
        return CLOSE_UNSUPPORTED, "no websocket route here"
    if not app.descriptor.has_websocket:
        return CLOSE_UNSUPPORTED, "this model has no websocket method"
    if not app.lifecycle.loaded or app.draining:
        return CLOSE_TRY_AGAIN, "model is not ready"
    return None


async def handle_websocket(app: ModelApp, scope: Scope, receive: Receive, send: Send) -> None:
    ws = WebSocket(scope, receive, send)
    headers = dict(scope["headers"])
    request_id = (headers.get(b"x-request-id") or b"").decode("latin-1") or "ws"
    token = request_id_var.set(request_id)
    try:
        refusal = _refusal(app, scope["path"])
        # Accept before closing: a close before the handshake reaches the client as
        # HTTP 403, and the close code is what tells it why.
        await ws.accept()
        if refusal is not None:
            await ws.close(code=refusal[0], reason=refusal[1])
            return
        try:
            await app.lifecycle.model.websocket(ws)
        except WebSocketDisconnect:
            return
        except Exception as exc:
            logger.error("websocket hook raised %s: %s", type(exc).__name__, exc, exc_info=exc)
            if ws.application_state is not WebSocketState.DISCONNECTED:
                await ws.close(code=CLOSE_INTERNAL_ERROR, reason=type(exc).__name__)
            return
        if ws.application_state is not WebSocketState.DISCONNECTED:
            await ws.close(code=CLOSE_NORMAL)
    finally:
        request_id_var.reset(token)
