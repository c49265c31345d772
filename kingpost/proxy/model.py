"""The Model class of a custom server: the command it runs is the model.

Kingpost's server core runs it like any other model: ``load()`` waits for the
command to be ready (readiness answers 503 meanwhile, and a failure exits
non-zero), ``is_healthy()`` follows the command, and ``websocket()`` relays.
"""

from __future__ import annotations

from typing import ClassVar

from starlette.websockets import WebSocket

from kingpost.logs import request_id_var
from kingpost.proxy.supervisor import ServerSupervisor
from kingpost.proxy.websocket import relay_websocket


class CustomServer:
    """Stands for one supervised command; made by ``custom_server_class``."""

    supervisor: ClassVar[ServerSupervisor]
    websocket_url: ClassVar[str]
    max_message_bytes: ClassVar[int]

    def load(self) -> None:
        self.supervisor.wait_first_ready()

    async def is_healthy(self) -> bool:
        return self.supervisor.ready

    async def websocket(self, ws: WebSocket) -> None:
        await relay_websocket(ws, self.websocket_url, request_id_var.get(), self.max_message_bytes)


def custom_server_class(supervisor: ServerSupervisor, max_message_bytes: int) -> type[CustomServer]:
    """A CustomServer bound to ``supervisor``, for the server core to construct."""
    config = supervisor.config
    websocket_url = f"ws://127.0.0.1:{config.server_port}{config.predict_endpoint}"
    attributes = {
        "supervisor": supervisor,
        "websocket_url": websocket_url,
        "max_message_bytes": max_message_bytes,
    }
    return type("CustomServer", (CustomServer,), attributes)
