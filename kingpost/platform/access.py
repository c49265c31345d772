"""Who may call what on ``kingpost up``: the platform's keys and the rule of each route.

Once any key exists (in the state store, or given with ``--api-key`` /
``KINGPOST_API_KEYS``), every route but liveness needs one: invocations the
``invoke`` scope (within the key's models and environments), the async
endpoints ``async``, the admin API and the platform's pages ``admin``.

    keys = PlatformKeys(PlatformKeyStore(store), api_keys=["an-operator-key-0123"])
    rules = RouteRules(lambda: platform.snapshot)
    rules(scope)        # RouteAccess(scope="invoke", model="echo", environment="production", ...)
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace

from kingpost.auth.guard import RouteAccess, path_dialect
from kingpost.auth.keys import ChainedKeyStore, MemoryKeyStore, static_key
from kingpost.logs import register_secret
from kingpost.platform.keystore import PlatformKeyStore
from kingpost.platform.replica import Scope
from kingpost.platform.router import (
    ASYNC_PREDICT,
    ASYNC_QUEUE_STATUS,
    DEVELOPMENT,
    ENVIRONMENT,
    AsyncRequestPath,
    Invocation,
    parse_invocation,
)
from kingpost.platform.store import Snapshot
from kingpost.server.errors import ErrorDialect

ADMIN_PREFIX = "/admin/"
# The platform's own pages and numbers: admin scope, like the admin API.
ADMIN_PAGES = ("/metrics", "/playground", "/docs", "/openapi.json")
LIVENESS = ("/", "/healthz")
_ASYNC_ENDPOINTS = frozenset({ASYNC_PREDICT, ASYNC_QUEUE_STATUS})


class PlatformKeys:
    """The keys ``kingpost up`` checks: the operator's (every scope), the store's, and
    one it makes for its own calls to its admin API (applying ``kingpost.yaml``),
    which lives only in this process's memory."""

    def __init__(self, store: PlatformKeyStore, api_keys: Sequence[str] = ()) -> None:
        self.store = store
        self.internal_key = "kp-internal-" + secrets.token_urlsafe(32)
        register_secret(self.internal_key)
        # Its own calls are never held back by the per-key quota (a key's own quota wins).
        internal = replace(
            static_key(self.internal_key, name="kingpost up"), rate=1e9, concurrency=1_000_000
        )
        operator = [static_key(key, name="command line") for key in api_keys]
        self.given = len(operator)
        self.checked = ChainedKeyStore([MemoryKeyStore([*operator, internal]), store])

    def required(self) -> bool:
        """Whether keys are on: any record exists (a revoked one too), or one was given."""
        return bool(self.given or len(self.store))

    def usable(self) -> int:
        """Keys a caller could use now (the internal one not counted)."""
        return self.given + self.store.usable()


class RouteRules:
    """``classify_platform`` for ``KeyGuard(classify=...)``, remembered per (host, path,
    method) until the platform's snapshot changes: the rule of a route is worked out
    once, not for every request. Bounded: long paths are not kept, and the memo starts
    over when full."""

    MAX_ENTRIES = 4096
    MAX_PATH = 512

    def __init__(self, snapshot_of: Callable[[], Snapshot]) -> None:
        self.snapshot_of = snapshot_of
        self._snapshot: Snapshot | None = None
        self._memo: dict[tuple[bytes | None, str, str], RouteAccess] = {}

    def __call__(self, scope: Scope, opened: Collection[str] = ()) -> RouteAccess:
        snapshot = self.snapshot_of()
        if snapshot is not self._snapshot:
            self._memo.clear()
            self._snapshot = snapshot
        path: str = scope["path"]
        key = (host_of(scope), path, scope.get("method", "GET"))
        found = self._memo.get(key)
        if found is None:
            found = classify_platform(scope, snapshot)
            if len(path) <= self.MAX_PATH:
                if len(self._memo) >= self.MAX_ENTRIES:
                    self._memo.clear()
                self._memo[key] = found
        return found


def invocation_dialect(invocation: Invocation) -> ErrorDialect:
    """The error dialect of an invocation: the replica path's for ``sync``, else Kingpost."""
    if invocation.endpoint == "sync":
        return path_dialect(invocation.path)
    return ErrorDialect.KINGPOST


def host_of(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"host":
            return bytes(value)
    return None


def classify_platform(scope: Scope, snapshot: Snapshot) -> RouteAccess:
    """The access rule of a platform request (``KeyGuard(classify=...)``)."""
    path: str = scope["path"]
    invocation = parse_invocation(host_of(scope), path)
    if isinstance(invocation, Invocation):
        found = snapshot.find_model(invocation.model)
        model = found.name if found is not None else invocation.model
        environment = None
        if invocation.kind == ENVIRONMENT:
            environment = invocation.target
        elif invocation.kind == DEVELOPMENT:
            environment = DEVELOPMENT
        needed = "async" if invocation.endpoint in _ASYNC_ENDPOINTS else "invoke"
        dialect = invocation_dialect(invocation)
        return RouteAccess(dialect, needed, environment, needed, model=model)
    if isinstance(invocation, AsyncRequestPath):
        found = snapshot.find_model(invocation.model) if invocation.model else None
        named = found.name if found is not None else invocation.model
        return RouteAccess(ErrorDialect.KINGPOST, "async", None, "async", model=named)
    if path in LIVENESS and scope.get("method", "GET") in ("GET", "HEAD"):
        return RouteAccess(ErrorDialect.KINGPOST, None, group="liveness")
    if path.startswith(ADMIN_PREFIX) or path.startswith(ADMIN_PAGES):
        return RouteAccess(ErrorDialect.KINGPOST, "admin", group="admin")
    return RouteAccess(ErrorDialect.KINGPOST, "invoke")
