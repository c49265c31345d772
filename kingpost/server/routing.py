"""The public URL grammar of a model server.

Besides its own routes, a Kingpost server answers the hosted platform's
invocation URLs so that client code written for them works unchanged:

    /environments/{env}/predict          -> /predict
    /environments/{env}/sync/{route}     -> /{route}
    /environments/{env}/websocket        -> /v1/websocket
    (and the same under /production, /development, /deployment/{id})
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

PLATFORM_PREFIX = re.compile(
    r"^/(?:environments/(?P<env>[^/]+)|(?P<named>production|development)|deployment/(?P<deployment>[^/]+))(?P<rest>/.*)?$"
)

Handler = Callable[[Any], Awaitable[None]]


@dataclass(frozen=True)
class Route:
    name: str
    methods: frozenset[str]
    handler: Handler

    @property
    def allow_header(self) -> bytes:
        return ", ".join(sorted(self.methods)).encode()


@dataclass(frozen=True)
class PlatformPath:
    """A platform URL split into the environment it names and the local path."""

    environment: str | None
    path: str


def split_platform_path(path: str) -> PlatformPath | None:
    """Map a hosted-platform URL to the local route it reaches, or None."""
    match = PLATFORM_PREFIX.match(path)
    if match is None:
        return None
    environment = match["env"] or match["named"]
    rest = match["rest"] or "/"
    if rest == "/predict":
        local = "/predict"
    elif rest == "/websocket":
        local = "/v1/websocket"
    elif rest == "/async_predict":
        local = "/async_predict"
    elif rest.startswith("/sync/"):
        local = rest[len("/sync") :]
    elif rest == "/sync":
        local = "/predict"
    else:
        return None
    return PlatformPath(environment, local)


class Router:
    """Exact-path routing with the platform grammar as a fallback."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}

    def add(self, path: str, name: str, methods: tuple[str, ...], handler: Handler) -> None:
        self.routes[path] = Route(name, frozenset(methods), handler)

    def resolve(self, path: str) -> Route | None:
        route = self.routes.get(path)
        if route is not None:
            return route
        if len(path) > 1 and path.endswith("/"):
            route = self.routes.get(path.rstrip("/"))
            if route is not None:
                return route
        platform = split_platform_path(path)
        if platform is not None:
            return self.routes.get(platform.path)
        return None
