"""Websockets get request ids as HTTP requests do (the core, in process)."""

from __future__ import annotations

from starlette.testclient import TestClient
from starlette.websockets import WebSocket

from kingpost.logs import request_id_var
from kingpost.server.app import ServerApp
from kingpost.server.routing import Router, WebSocketRoute


async def tell_id(ws: WebSocket) -> None:
    await ws.accept()
    await ws.send_text(request_id_var.get())
    await ws.close()


def app() -> ServerApp:
    return ServerApp(Router([WebSocketRoute("/v1/websocket", tell_id)]))


def test_each_websocket_gets_a_new_request_id() -> None:
    with TestClient(app()) as client:
        ids = []
        for _ in range(2):
            with client.websocket_connect("/v1/websocket") as ws:
                ids.append(ws.receive_text())
    assert ids[0] != ids[1]
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_a_websocket_keeps_the_request_id_the_client_sent() -> None:
    with (
        TestClient(app()) as client,
        client.websocket_connect("/v1/websocket", headers={"x-request-id": "abc-123"}) as ws,
    ):
        assert ws.receive_text() == "abc-123"


def test_a_websocket_path_with_no_route_closes_with_1003() -> None:
    with TestClient(app()) as client, client.websocket_connect("/elsewhere") as ws:
        message = ws.receive()
    assert message == {"type": "websocket.close", "code": 1003, "reason": "no websocket route here"}
