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

Pages a person opens in a browser (``browser_groups``) also take the key as the
password of HTTP Basic: their 401 asks for it, and the browser then sends it
with the page's own requests. A browser sends such credentials to cross-site
requests too, so a request so authenticated may change something only when
the browser says it comes from this server's own pages (``Sec-Fetch-Site:
same-origin``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from kingpost.auth.keys import ApiKey, KeyStore, basic_key, presented_key, verify_key
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
_BASIC_CHALLENGE = (b"www-authenticate", b'Basic realm="kingpost", charset="UTF-8"')
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class RouteAccess:
    """What a request needs: ``scope`` None means open to all."""

    dialect: Dialect
    scope: str | None
    environment: str | None = None
    group: str = "invoke"
    model: str | None = None  # None: the guard's own model


def classify_path(path: str, method: str, opened: Collection[str] = ()) -> RouteAccess:
    """The access rule of a path in the URL grammar of ``kingpost serve``."""
    environment = None
    local = path
    match = PLATFORM_PREFIX.match(path)
    if match is not None:
        environment = match["env"] or match["named"]
        rest = match["rest"] or "/"
        local = rest[len("/sync") :] if rest.startswith("/sync/") else rest
    dialect = path_dialect(local)
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


def classify_request(scope: Scope, opened: Collection[str] = ()) -> RouteAccess:
    """``classify_path`` for an ASGI scope (what KeyGuard calls)."""
    return classify_path(scope["path"], scope.get("method", "GET"), opened)


def path_dialect(local: str) -> Dialect:
    """The error dialect of a path as a model server answers it (``/v1/messages``: Anthropic)."""
    if local == "/v1/messages" or local.startswith("/v1/messages/"):
        return ErrorDialect.ANTHROPIC
    if local.startswith("/v1/") and not any(local.startswith(p) for p in _KINGPOST_V1):
        return ErrorDialect.OPENAI
    return ErrorDialect.KINGPOST


def route_dialects(router: Router) -> Callable[[str], Dialect]:
    """The error dialect of the route a path resolves to in ``router`` (its own table)."""

    def dialect_of(path: str) -> Dialect:
        route = router.resolve(path)
        return route.dialect if isinstance(route, Route) else path_dialect(router.local_path(path))

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
        classify: Callable[[Scope, Collection[str]], RouteAccess] = classify_request,
        dialect_of: Callable[[str], Dialect] | None = None,
        log_refusals: bool = True,
        required: Callable[[], bool] | None = None,
        browser_groups: Collection[str] = (),
    ) -> None:
        """``required``, when given, says whether keys are on at all right now (the
        platform's are once any key exists); while it is false every request passes."""
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
        self.required = required
        self.browser_groups = frozenset(browser_groups)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        if self.required is not None and not self.required():
            await self.app(scope, receive, send)
            return
        access = self.classify(scope, self.opened)
        if access.scope is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            key = await verify_key(self.store, self._presented(scope, access))
            environment = access.environment or self.environment
            model = self.model if access.model is None else access.model
            refusal = key.refusal(access.scope, model, environment)
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

    def _presented(self, scope: Scope, access: RouteAccess) -> str | None:
        headers = scope["headers"]
        presented = presented_key(headers)
        if presented is not None or access.group not in self.browser_groups:
            return presented
        presented = basic_key(headers)
        unsafe = scope.get("method", "GET") not in _SAFE_METHODS
        if presented is not None and unsafe and (b"sec-fetch-site", b"same-origin") not in headers:
            raise PermissionDeniedError(
                "a key sent by a browser changes nothing unless the request comes from "
                "this server's own pages; send it as Authorization: Bearer"
            )
        return presented

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
        browser = isinstance(exc, AuthenticationError) and access.group in self.browser_groups
        body = reply.body
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", request_id.encode()),
            (b"x-baseten-request-id", request_id.encode()),
            *reply.headers,  # the error table's, the platform's error headers among them
            *((_BASIC_CHALLENGE,) if browser else ()),  # a browser asks for the key
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
