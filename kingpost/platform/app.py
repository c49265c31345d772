"""The platform's ASGI app: invocations to replicas, ``/admin/v1`` to the admin API.

Every invocation takes one path: the URL is parsed (``router``), resolved to
a pool (``Platform.resolve``), and the pool hands it to a replica. Endpoints
the platform answers itself (``wake``) are handled here; the async ones
(``async_predict``, ``async_queue_status``, ``/async_request/{id}``) go to
``async_routes`` when async inference is plugged in, else 404.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from kingpost.platform.controller import Platform, Target
from kingpost.platform.errors import NotFoundError, PlatformError
from kingpost.platform.relay import ClientGone
from kingpost.platform.replica import Receive, Scope, Send
from kingpost.platform.router import (
    ASYNC_PREDICT,
    ASYNC_QUEUE_STATUS,
    WAKE,
    AsyncRequestPath,
    Invocation,
    parse_invocation,
)
from kingpost.proxy.upstream import UpstreamError

if TYPE_CHECKING:
    from kingpost.observe.tracing import Tracing
    from kingpost.platform.pool import ReplicaPool

logger = logging.getLogger("kingpost.platform")

ADMIN_PREFIX = "/admin/"
# The platform's own pages and numbers: served by the admin app, behind what guards it.
ADMIN_PAGES = ("/metrics", "/playground", "/docs", "/openapi.json")
CLIENT_GONE = 499  # the status recorded for a request whose client left (nginx's)
BROKEN_OFF = 502  # recorded for a reply the replica began and did not finish
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class AsyncRoutes(Protocol):
    """What async inference plugs in (``PlatformApp(async_routes=...)``).

    ``submit`` answers ``POST {target}/async_predict``, ``queue_status``
    ``GET {target}/async_queue_status``; both get the resolved target, whose
    ``pool.handle`` runs a request on a replica. ``request`` answers
    ``GET|DELETE /async_request/{id}`` (``model`` is None in the bare form).
    ``start`` runs once the platform has started: the queues with unfinished work
    (from before a restart) get their workers then, not on first use.
    """

    async def start(self, platform: Platform) -> None: ...

    async def submit(self, target: Target, scope: Scope, receive: Receive, send: Send) -> None: ...

    async def queue_status(
        self, target: Target, scope: Scope, receive: Receive, send: Send
    ) -> None: ...

    async def request(
        self, model: str | None, request_id: str, scope: Scope, receive: Receive, send: Send
    ) -> None: ...


class PlatformApp:
    def __init__(
        self,
        platform: Platform,
        admin: ASGIApp,
        async_routes: AsyncRoutes | None = None,
        on_startup: Callable[[], Any] | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.platform = platform
        self.admin = admin
        self.async_routes = async_routes
        self.on_startup = on_startup
        self.tracing = tracing
        if tracing is not None and tracing.tracer is not None:
            # Only then is the routing hop a span: with tracing off, nothing is wrapped.
            from kingpost.platform.traced import TracedForward

            self._forward = TracedForward(self._forward, tracing)  # type: ignore[method-assign]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        invocation = parse_invocation(_host(scope), path)
        try:
            if isinstance(invocation, Invocation):
                await self._invoke(invocation, scope, receive, send)
            elif isinstance(invocation, AsyncRequestPath):
                if self.async_routes is None:
                    raise NotFoundError("async inference is not enabled on this platform")
                await self.async_routes.request(
                    invocation.model, invocation.request_id, scope, receive, send
                )
            elif path.startswith(ADMIN_PREFIX) or path.startswith(ADMIN_PAGES):
                await self.admin(scope, receive, send)
            elif path in ("/", "/healthz"):
                await _send_json(send, 200, {"status": "ok"})
            else:
                raise NotFoundError(
                    f"no route for {path}: use Host: model-{{model}}.… or /models/{{model}}/…"
                )
        except PlatformError as exc:
            await _send_error(send, exc)
        except (ClientGone, UpstreamError):
            return  # nobody to answer, or the reply was already under way

    async def _invoke(
        self, invocation: Invocation, scope: Scope, receive: Receive, send: Send
    ) -> None:
        endpoint = invocation.endpoint
        if invocation.path:
            pool = self.platform.resolve(invocation)
            await self._forward(pool, invocation, scope, receive, send)
        elif endpoint == WAKE:
            pool = await self.platform.wake(invocation)
            await _send_json(send, 202, {"status": "waking", "deployment_id": pool.key[0]})
        elif endpoint in (ASYNC_PREDICT, ASYNC_QUEUE_STATUS):
            if self.async_routes is None:
                raise NotFoundError("async inference is not enabled on this platform")
            target = self.platform.target(invocation)
            if endpoint == ASYNC_PREDICT:
                await self.async_routes.submit(target, scope, receive, send)
            else:
                await self.async_routes.queue_status(target, scope, receive, send)

    async def _forward(
        self, pool: ReplicaPool, invocation: Invocation, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Hand the request to ``pool``, and record its route, status and latency."""
        started = time.perf_counter()
        status: int | None = 0
        try:
            status = await pool.handle(scope, receive, send, invocation.path)
        except PlatformError as exc:
            status = exc.status_code
            raise
        except ClientGone:
            status = CLIENT_GONE
            raise
        except UpstreamError:  # the replica broke off a reply it had begun
            status = BROKEN_OFF
            raise
        finally:
            pool.stats.observe(invocation.endpoint, status, time.perf_counter() - started)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        invocation = parse_invocation(_host(scope), scope["path"])
        try:
            if not isinstance(invocation, Invocation) or invocation.endpoint != "websocket":
                raise NotFoundError(f"no websocket at {scope['path']}")
            pool = self.platform.resolve(invocation)
        except PlatformError as exc:
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 4404, "reason": exc.message[:120]})
            return
        await pool.handle_websocket(scope, receive, send, invocation.path)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.platform.start()
                except Exception as exc:
                    logger.exception("the platform failed to start")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                if self.async_routes is not None:
                    try:
                        await self.async_routes.start(self.platform)
                    except Exception:  # the queue is still there: it resumes on first use
                        logger.exception("async inference could not resume its queues")
                if self.on_startup is not None:
                    self.on_startup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.shield(self.platform.stop())
                await send({"type": "lifespan.shutdown.complete"})
                return


def _host(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"host":
            return bytes(value)
    return None


async def _send_json(send: Send, status: int, body: object) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": orjson.dumps(body)})


async def _send_error(send: Send, exc: PlatformError) -> None:
    try:
        await send(
            {"type": "http.response.start", "status": exc.status_code, "headers": exc.headers()}
        )
        await send({"type": "http.response.body", "body": exc.body()})
    except Exception:  # the reply had begun, or the client left: nothing more to say
        logger.debug("could not send the error %r", exc)
