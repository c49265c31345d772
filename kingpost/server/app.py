"""The server core: an ASGI app that is given its routes.

It knows nothing of models or modes. It resolves a request's route in the
table it was given, gives the request its id, runs the endpoint, renders any
failure in the route's error dialect, and records metrics and the access log.
What lives as long as the app (a model loading, a custom server's command) is
a :class:`Service` it starts and stops with its lifespan.

    app = ServerApp(
        Router([Route("/predict", predict, methods=("POST",))]),
        service=model_service,
        drain=drain,
    )

Plain ASGI underneath; Starlette objects only where a model asks for them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Protocol

from starlette.websockets import WebSocket

from kingpost.errors import (
    ClientDisconnectedError,
    MethodNotAllowedError,
    NotReadyError,
    RouteNotFoundError,
)
from kingpost.logs import access_log, request_id_var
from kingpost.server.drain import Drain
from kingpost.server.errors import ErrorDialect, ErrorTable
from kingpost.server.exchange import Exchange, Receive, Scope, Send, request_id_of
from kingpost.server.metrics import ServerMetrics
from kingpost.server.routing import Mount, Route, Router
from kingpost.server.websocket import CLOSE_UNSUPPORTED, refuse

logger = logging.getLogger("kingpost.server")

NO_WEBSOCKET = "WebSocket is not implemented on this deployment."  # Truss's close reason


@dataclass(frozen=True)
class ServerSettings:
    """How the server behaves, independent of the model (from the CLI)."""

    dev: bool = False
    access_log: bool = True


class Service(Protocol):
    """What lives as long as the app: started by its lifespan, stopped at shutdown."""

    def start(self) -> None:
        """Begin in the background (the server listens meanwhile)."""

    async def wait_started(self) -> BaseException | None:
        """Wait until it serves; the exception it failed to start with, or None."""

    async def stop(self) -> None: ...


class Servable(Protocol):
    """What ``kingpost.serve`` runs: an ASGI app with a drain for SIGTERM."""

    drain: Drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...


class ServerApp:
    """ASGI app serving a route table."""

    def __init__(
        self,
        router: Router,
        *,
        service: Service | None = None,
        drain: Drain | None = None,
        metrics: ServerMetrics | None = None,
        errors: ErrorTable | None = None,
        settings: ServerSettings | None = None,
    ) -> None:
        self.router = router
        self.service = service
        self.drain = drain or Drain()
        self.metrics = metrics or ServerMetrics()
        self.settings = settings or ServerSettings()
        self.errors = errors or ErrorTable(dev=self.settings.dev)

    # -- ASGI ------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.handle_http(scope, receive, send)
        elif kind == "websocket":
            await self.handle_websocket(scope, receive, send)
        elif kind == "lifespan":
            await self.lifespan(receive, send)

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.startup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def startup(self) -> None:
        if self.service is not None:
            self.service.start()

    async def wait_started(self) -> BaseException | None:
        """Wait for the service to start; what it failed with, or None."""
        return await self.service.wait_started() if self.service is not None else None

    async def shutdown(self) -> None:
        if self.service is not None:
            await self.service.stop()

    async def handle_http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        route = self.router.resolve(path)
        if isinstance(route, Mount):
            await _enter(route, scope, receive, send)
            return
        started = time.perf_counter()
        ex = Exchange(scope, receive, send)
        token = request_id_var.set(ex.request_id)
        try:
            if route is None:
                raise RouteNotFoundError(f"no route for {path}")
            if scope["method"] not in route.methods:
                raise MethodNotAllowedError(
                    f"method {scope['method']} is not allowed on {path}",
                    route.allow_header.decode(),
                )
            await route.endpoint(ex)
        except BaseException as exc:  # one place turns failures into replies
            await self._fail(ex, exc, route)
            if not isinstance(exc, Exception) and not self._shut_down_during(exc):
                raise
        finally:
            ex.close()
            elapsed = time.perf_counter() - started
            name = route.name if route is not None else "unknown"
            self.metrics.observe(name, ex.status, elapsed)
            if self.settings.access_log and (route is None or route.logged):
                access_log().write(scope["method"], path, ex.status, elapsed, name, ex.request_id)
            request_id_var.reset(token)

    async def _fail(self, ex: Exchange, exc: BaseException, route: Route | None) -> None:
        if isinstance(exc, ClientDisconnectedError) or ex.disconnected:
            ex.status = 499  # nobody is left to read a reply
            return
        shut_down = self._shut_down_during(exc)
        if ex.status:  # the response had begun: nothing more can be said to the client
            if shut_down:
                logger.info("a response was cut off by the shutdown (past the grace period)")
            else:
                logger.error("request failed after its response began: %r", exc)
            return
        if shut_down:
            # Past the grace period uvicorn cancels what still runs: a JSON 503 (retry),
            # not its text/plain 500 and a traceback.
            exc = NotReadyError("the server shut down before the request finished")
        elif isinstance(exc, asyncio.CancelledError):
            ex.status = 499
            return
        dialect = route.dialect if route is not None else ErrorDialect.KINGPOST
        reply = self.errors.reply(exc, dialect)
        try:
            await reply.send(ex)
        except Exception:  # the client may be gone
            ex.status = reply.status

    def _shut_down_during(self, exc: BaseException) -> bool:
        return isinstance(exc, asyncio.CancelledError) and self.drain.draining

    async def handle_websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        ws = WebSocket(scope, receive, send)
        token = request_id_var.set(request_id_of(scope))
        try:
            route = self.router.resolve_websocket(scope["path"])
            if route is None:
                await refuse(ws, CLOSE_UNSUPPORTED, NO_WEBSOCKET)
                return
            await route.endpoint(ws)
        finally:
            request_id_var.reset(token)


async def _enter(mount: Mount, scope: Scope, receive: Receive, send: Send) -> None:
    # A platform URL (``/environments/e/sync/v1/responses/x``) enters at its local path.
    path = scope["path"]
    rest = Router.local_path(path)[len(mount.prefix) :]
    root_path = scope.get("root_path", "") + path[: len(path) - len(rest)]
    await mount.app({**scope, "path": rest or "/", "root_path": root_path}, receive, send)
