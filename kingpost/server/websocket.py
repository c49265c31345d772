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


async def handle_websocket(app: ModelApp, scope: Scope, receive: Receive, send: Send) -> None:
    ws = WebSocket(scope, receive, send)
    headers = dict(scope["headers"])
    request_id = (headers.get(b"x-request-id") or b"").decode("latin-1") or "ws"
    token = request_id_var.set(request_id)
    try:
        if not _is_websocket_path(scope["path"]):
            await ws.close(code=CLOSE_UNSUPPORTED, reason="no websocket route here")
            return
        if not app.descriptor.has_websocket:
            await ws.close(code=CLOSE_UNSUPPORTED, reason="this model has no websocket method")
            return
        if not app.lifecycle.loaded or app.draining:
            await ws.close(code=CLOSE_TRY_AGAIN, reason="model is not ready")
            return
        await ws.accept()
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
