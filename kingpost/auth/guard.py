"""An ASGI check in front of a server: no key, no entry (liveness excepted).

``KeyGuard(app, store)`` answers 401 (with ``WWW-Authenticate``) when a request
carries no valid key, 403 when the key may not make it (scope, model,
environment), 429 (with ``Retry-After``) past the key's quota, each in the
error shape of the API family the path belongs to, before the app sees the
request. Websockets are checked at the handshake: the refusal is an HTTP reply
where the server can send one, else a close before accept (the client sees 403).

    app = KeyGuard(model_app, MemoryKeyStore([static_key("s3cret-key")]))

The key's header is taken out of what the app sees, so a key never reaches a
model or a custom server's logs; ``scope["auth"]`` holds the key's record.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from kingpost.auth.keys import ApiKey, KeyStore, presented_key, verify_key
from kingpost.errors import (
    AuthenticationError,
    PermissionDeniedError,
    RequestError,
    TooManyRequestsError,
)
from kingpost.limits import Quota, Quotas
from kingpost.logs import access_log
from kingpost.server.errors import ErrorDialect, Problem, render
from kingpost.server.exchange import Receive, Scope, Send, request_id_of
from kingpost.server.replies import ErrorReply
from kingpost.server.routing import PLATFORM_PREFIX, Route, Router

Dialect = ErrorDialect
# What may be opened to callers without a key, by name (``--open``).
OPENABLE = ("metrics", "docs", "readiness")
_CREDENTIAL_HEADERS = frozenset({b"authorization", b"x-api-key"})
_DOCS = re.compile(r"^/(?:docs|redoc)(?:/.*)?$|^/openapi\.json$")
_READINESS = frozenset({"/v1/models/model", "/v1/models/model/loaded", "/ping"})
_KINGPOST_V1 = frozenset({"/v1/models/model", "/v1/websocket"})
_ASYNC = re.compile(r"^/(?:async_predict|async_queue_status|async_request(?:/.*)?)$")
_CLOSE_POLICY_VIOLATION = 1008


@dataclass(frozen=True)
class RouteAccess:
    """What a request needs: ``scope`` None means open to all."""

    dialect: Dialect
    scope: str | None
    environment: str | None = None
    group: str = "invoke"


def classify_path(path: str, method: str, opened: Collection[str] = ()) -> RouteAccess:
    """The access rule of a path in the URL grammar of ``kingpost serve``."""
    environment = None
    local = path
    match = PLATFORM_PREFIX.match(path)
    if match is not None:
        environment = match["env"] or match["named"]
        rest = match["rest"] or "/"
        local = rest[len("/sync") :] if rest.startswith("/sync/") else rest
    dialect = _dialect(local)
    if local == "/" and match is None and method in ("GET", "HEAD"):
        return RouteAccess(dialect, None, environment, "liveness")
    if local in _READINESS:
        group = "readiness"
    elif local == "/metrics":
        group = "metrics"
    elif _DOCS.match(local):
        group = "docs"
    elif _ASYNC.match(local):
        return RouteAccess(dialect, "async", environment, "async")
    else:
        return RouteAccess(dialect, "invoke", environment)
    if group in opened:
        return RouteAccess(dialect, None, environment, group)
    return RouteAccess(dialect, "admin" if group == "metrics" else "invoke", environment, group)


def _dialect(local: str) -> Dialect:
    if local == "/v1/messages" or local.startswith("/v1/messages/"):
        return ErrorDialect.ANTHROPIC
    if local.startswith("/v1/") and not any(local.startswith(p) for p in _KINGPOST_V1):
        return ErrorDialect.OPENAI
    return ErrorDialect.KINGPOST


def route_dialects(router: Router) -> Callable[[str], Dialect]:
    """The error dialect of the route a path resolves to in ``router`` (its own table)."""

    def dialect_of(path: str) -> Dialect:
        route = router.resolve(path)
        return route.dialect if isinstance(route, Route) else _dialect(router.local_path(path))

    return dialect_of


def quota_of(key: ApiKey) -> Quota | None:
    if key.rate is None and key.concurrency is None:
        return None
    return Quota(rate=key.rate, concurrency=key.concurrency)


class KeyGuard:
    """ASGI middleware enforcing API keys and per-key quotas in front of ``app``."""

    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Any],
        store: KeyStore,
        *,
        model: str = "model",
        environment: str | None = None,
        quotas: Quotas | None = None,
        opened: Collection[str] = (),
        classify: Callable[[str, str, Collection[str]], RouteAccess] = classify_path,
        dialect_of: Callable[[str], Dialect] | None = None,
        log_refusals: bool = True,
    ) -> None:
        unknown = set(opened) - set(OPENABLE)
        if unknown:
            raise ValueError(f"only {', '.join(OPENABLE)} can be opened, not {sorted(unknown)}")
        self.app = app
        self.store = store
        self.model = model
        self.environment = environment
        self.quotas = quotas or Quotas()
        self.opened = frozenset(opened)
        self.classify = classify
        self.dialect_of = dialect_of
        self.log_refusals = log_refusals

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        access = self.classify(scope["path"], scope.get("method", "GET"), self.opened)
        if access.scope is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            key = await verify_key(self.store, presented_key(scope["headers"]))
            environment = access.environment or self.environment
            refusal = key.refusal(access.scope, self.model, environment)
            if refusal is not None:
                raise PermissionDeniedError(refusal)
            admission = self.quotas.admit(key.id, quota_of(key))
        except RequestError as exc:
            await self._refuse(scope, receive, send, access, exc, started)
            return
        scope["auth"] = key
        scope["headers"] = [h for h in scope["headers"] if h[0] not in _CREDENTIAL_HEADERS]
        with admission:
            await self.app(scope, receive, send)

    async def _refuse(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        access: RouteAccess,
        exc: RequestError,
        started: float,
    ) -> None:
        request_id = request_id_of(scope)
        dialect = self.dialect_of(scope["path"]) if self.dialect_of else access.dialect
        reply = refusal(exc, dialect)
        body = reply.body
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", request_id.encode()),
            (b"x-baseten-request-id", request_id.encode()),
            *reply.headers,  # the error table's, the platform's error headers among them
        ]
        status = reply.status
        if scope["type"] == "websocket":
            await receive()  # websocket.connect
            if "websocket.http.response" in scope.get("extensions", {}):
                start = {"type": "websocket.http.response.start", "status": status}
                await send({**start, "headers": headers})
                await send({"type": "websocket.http.response.body", "body": body})
            else:
                await send({"type": "websocket.close", "code": _CLOSE_POLICY_VIOLATION})
        else:
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        if self.log_refusals:
            method = scope.get("method", "WS")
            elapsed = time.perf_counter() - started
            access_log().write(method, scope["path"], status, elapsed, "auth", request_id)


def refusal(exc: RequestError, dialect: Dialect) -> ErrorReply:
    """The 401/403/429 reply for ``exc`` in ``dialect``, through the core's error table."""
    headers: tuple[tuple[bytes, bytes], ...] = ()
    code = None
    if isinstance(exc, AuthenticationError):
        code = "invalid_api_key"
        challenge = b'Bearer realm="kingpost", error="invalid_token"'
        if exc.message == "an API key is required":
            challenge = b'Bearer realm="kingpost"'  # RFC 6750 3.1: no error code without a key
        headers = ((b"www-authenticate", challenge),)
    elif isinstance(exc, TooManyRequestsError):
        code = "rate_limit_exceeded"
        headers = ((b"retry-after", str(exc.retry_after).encode()),)
    elif isinstance(exc, PermissionDeniedError):
        code = "permission_denied"
    return render(Problem(exc.status_code, exc.message, code=code, headers=headers), dialect)
