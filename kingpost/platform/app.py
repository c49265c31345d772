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

from kingpost.auth.guard import KeyGuard
from kingpost.errors import NotFoundError, RequestError, TooManyRequestsError
from kingpost.limits import Admission, Quota, Quotas
from kingpost.platform.access import (
    ADMIN_PAGES,
    ADMIN_PREFIX,
    LIVENESS,
    PlatformKeys,
    RouteRules,
    host_of,
    invocation_dialect,
)
from kingpost.platform.controller import Platform, Target
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
from kingpost.server.errors import ErrorDialect, ErrorTable

if TYPE_CHECKING:
    from kingpost.observe.tracing import Tracing
    from kingpost.platform.pool import ReplicaPool

logger = logging.getLogger("kingpost.platform")

CLIENT_GONE = 499  # the status recorded for a request whose client left (nginx's)
BROKEN_OFF = 502  # recorded for a reply the replica began and did not finish
EDGE_ERRORS = ErrorTable()
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class AsyncRoutes(Protocol):
    """What async inference plugs in (``PlatformApp(async_routes=...)``).

    ``submit`` answers ``POST {target}/async_predict``, ``queue_status``
    ``GET {target}/async_queue_status``; both get the resolved target, whose
    ``pool.handle`` runs a request on a replica. ``request`` answers
    ``GET|DELETE /async_request/{id}`` (``model`` is None in the bare form).
    ``start`` runs once the platform has started: the queues with unfinished work
    (from before a restart) get their workers then, not on first use. ``stop`` runs
    at shutdown, before the replicas stop, so that running work can still finish.
    """

    async def start(self, platform: Platform) -> None: ...

    async def stop(self) -> None: ...

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
        keys: PlatformKeys | None = None,
        key_quota: Quota | None = None,
        model_quotas: dict[str, Quota] | None = None,
    ) -> None:
        self.platform = platform
        self.admin = admin
        self.async_routes = async_routes
        self.on_startup = on_startup
        self.tracing = tracing
        self.keys = keys
        # Per model, over every caller: by name (an invocation may name the model by id).
        self.model_quotas = model_quotas or {}
        self._model_usage = Quotas(subject="this model")
        self._entry: Callable[..., Awaitable[None]] = self._dispatch
        self._key_watch: asyncio.Task[None] | None = None
        if keys is not None:
            self._entry = KeyGuard(
                self._dispatch,
                keys.checked,
                model="",
                quotas=Quotas(key_quota),
                classify=RouteRules(lambda: platform.snapshot),
                required=keys.required,
                browser_groups={"admin"},  # the playground, opened with the key as password
            )
        if tracing is not None and tracing.tracer is not None:
            # Only then is the routing hop a span: with tracing off, nothing is wrapped.
            from kingpost.platform.traced import TracedForward

            self._forward = TracedForward(self._forward, tracing)  # type: ignore[method-assign]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        else:
            await self._entry(scope, receive, send)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        invocation = parse_invocation(host_of(scope), path)
        try:
            if isinstance(invocation, Invocation):
                with self._admit(invocation):
                    await self._invoke(invocation, scope, receive, send)
            elif isinstance(invocation, AsyncRequestPath):
                if self.async_routes is None:
                    raise NotFoundError("async inference is not enabled on this platform")
                await self.async_routes.request(
                    invocation.model, invocation.request_id, scope, receive, send
                )
            elif path.startswith(ADMIN_PREFIX) or path.startswith(ADMIN_PAGES):
                await self.admin(scope, receive, send)
            elif path in LIVENESS:
                await _send_json(send, 200, {"status": "ok"})
            else:
                raise NotFoundError(
                    f"no route for {path}: use Host: model-{{model}}.… or /models/{{model}}/…"
                )
        except TooManyRequestsError as exc:  # a model's quota: in the route's dialect
            dialect = ErrorDialect.KINGPOST
            if isinstance(invocation, Invocation):
                dialect = invocation_dialect(invocation)
            await _send_error(send, exc, dialect)
        except RequestError as exc:
            await _send_error(send, exc)
        except (ClientGone, UpstreamError):
            return  # nobody to answer, or the reply was already under way

    def _admit(self, invocation: Invocation) -> Admission:
        """Count the invocation against its model's quota (TooManyRequestsError past it)."""
        if not self.model_quotas:
            return _NO_QUOTA
        model = self.platform.snapshot.find_model(invocation.model)
        if model is None:
            return _NO_QUOTA  # unknown: a 404 follows
        quota = self.model_quotas.get(model.name)
        if quota is None:
            return _NO_QUOTA
        return self._model_usage.admit(model.name, quota)

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
        except RequestError as exc:
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
        invocation = parse_invocation(host_of(scope), scope["path"])
        try:
            if not isinstance(invocation, Invocation) or invocation.endpoint != "websocket":
                raise NotFoundError(f"no websocket at {scope['path']}")
            pool = self.platform.resolve(invocation)
            admission = self._admit(invocation)
        except TooManyRequestsError as exc:
            await _refuse_websocket(scope, receive, send, exc)
            return
        except RequestError as exc:
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 4404, "reason": exc.message[:120]})
            return
        with admission:
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
                if self.keys is not None:
                    self._key_watch = asyncio.get_running_loop().create_task(
                        self.keys.store.watch()
                    )
                if self.async_routes is not None:
                    try:
                        await self.async_routes.start(self.platform)
                    except Exception:  # the queue is still there: it resumes on first use
                        logger.exception("async inference could not resume its queues")
                if self.on_startup is not None:
                    self.on_startup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._key_watch is not None:
                    self._key_watch.cancel()
                if self.async_routes is not None:
                    try:
                        await asyncio.shield(self.async_routes.stop())
                    except Exception:  # leases run out instead: the work is run again
                        logger.exception("async inference did not stop cleanly")
                await asyncio.shield(self.platform.stop())
                await send({"type": "lifespan.shutdown.complete"})
                return


_NO_QUOTA = Admission(None)


async def _send_json(send: Send, status: int, body: object) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": orjson.dumps(body)})


async def _send_error(
    send: Send, exc: RequestError, dialect: ErrorDialect = ErrorDialect.KINGPOST
) -> None:
    reply = EDGE_ERRORS.reply(exc, dialect)  # the platform's own errors: {"error": "..."}
    headers = [(b"content-type", b"application/json"), *reply.headers]
    try:
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})
    except Exception:  # the reply had begun, or the client left: nothing more to say
        logger.debug("could not send the error %r", exc)


async def _refuse_websocket(scope: Scope, receive: Receive, send: Send, exc: RequestError) -> None:
    """Refuse a handshake with an HTTP reply where the server can send one, else a close."""
    await receive()  # websocket.connect
    reply = EDGE_ERRORS.reply(exc)
    if "websocket.http.response" in scope.get("extensions", {}):
        headers = [(b"content-type", b"application/json"), *reply.headers]
        start = {"type": "websocket.http.response.start", "status": reply.status}
        await send({**start, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": reply.body})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": exc.message[:120]})
