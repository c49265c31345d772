"""The route table of a custom server.

Kingpost keeps ``/metrics`` and ``/v1/models/model/loaded``; predict goes to
``predict_endpoint``, liveness and readiness to theirs, websockets are relayed
to ``predict_endpoint``, and every other path (``.../sync/{route}`` included)
is forwarded unchanged. Request ids, metrics and the access log work as for
any model because the same core serves this table.
"""

from __future__ import annotations

from starlette.websockets import WebSocket

from kingpost.errors import NotReadyError
from kingpost.logs import request_id_var
from kingpost.proxy.service import CustomServer
from kingpost.proxy.supervisor import ServerState
from kingpost.proxy.websocket import relay_websocket
from kingpost.server.exchange import Exchange
from kingpost.server.metrics import ServerMetrics
from kingpost.server.probes import ALIVE, Loaded, Metrics
from kingpost.server.replies import JSON
from kingpost.server.routing import ANY_METHOD, Route, Router, WebSocketRoute, split_platform_path
from kingpost.server.websocket import CLOSE_TRY_AGAIN, refuse


def custom_server_routes(server: CustomServer, metrics: ServerMetrics) -> Router:
    forward = Forward(server)
    predict = Forward(server, server.config.predict_endpoint)
    return Router(
        [
            Route("/", ServerLiveness(server, forward), ANY_METHOD, name="liveness", logged=False),
            Route(
                "/v1/models/model",
                ServerReadiness(server),
                ("GET", "HEAD"),
                name="readiness",
                logged=False,
            ),
            Route(
                "/v1/models/model/loaded", Loaded(server.lifecycle), ("GET", "HEAD"), name="loaded"
            ),
            Route("/metrics", Metrics(metrics), name="metrics", logged=False),
            Route("/predict", predict, ANY_METHOD, name="predict"),
            Route("/v1/models/model:predict", predict, ANY_METHOD, name="predict"),
            WebSocketRoute("/v1/websocket", RelayWebSocket(server)),
        ],
        fallback=Route("/", forward, ANY_METHOD, name="forward"),
    )


class Forward:
    """Forwards the request to ``path`` on the command, or to the path it came on."""

    def __init__(self, server: CustomServer, path: str | None = None) -> None:
        self.server = server
        self.path = path

    async def __call__(self, ex: Exchange) -> None:
        server = self.server
        server.check_serving()
        with server.drain:  # a drain on SIGTERM waits for these
            await server.forwarder.forward(ex, self.path or upstream_path(ex.scope))


class ServerLiveness:
    def __init__(self, server: CustomServer, forward: Forward) -> None:
        self.server = server
        self.forward = forward

    async def __call__(self, ex: Exchange) -> None:
        server = self.server
        if ex.scope["method"] not in ("GET", "HEAD"):
            await self.forward(ex)
        elif server.supervisor.ready:
            await server.forwarder.forward(ex, server.config.liveness_endpoint)
        elif server.supervisor.state in (ServerState.STARTING, ServerState.RESTARTING):
            # Kingpost is alive and bringing the command up; readiness says it is not ready.
            await ex.send_bytes(200, ALIVE, JSON)
        else:
            raise NotReadyError(f"the custom server is {server.supervisor.state.value}")


class ServerReadiness:
    def __init__(self, server: CustomServer) -> None:
        self.server = server

    async def __call__(self, ex: Exchange) -> None:
        server = self.server
        server.drain.check()
        if not server.lifecycle.loaded or not server.supervisor.ready:
            raise NotReadyError("the custom server is not ready")
        await server.forwarder.forward(ex, server.config.readiness_endpoint)


class RelayWebSocket:
    """Relays a websocket to the command's ``predict_endpoint``."""

    def __init__(self, server: CustomServer) -> None:
        self.server = server

    async def __call__(self, ws: WebSocket) -> None:
        server = self.server
        if not server.lifecycle.loaded or server.drain.draining:
            await refuse(ws, CLOSE_TRY_AGAIN, "model is not ready")
            return
        await ws.accept()
        await relay_websocket(
            ws, server.websocket_url, request_id_var.get(), server.max_message_bytes
        )


def upstream_path(scope: dict[str, object]) -> str:
    """The path to forward: as the client wrote it, less any platform prefix."""
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, bytes) else str(scope["path"])
    platform = split_platform_path(path)
    return platform.path if platform is not None else path
