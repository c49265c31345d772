"""Routes are data: the table a server core is given.

    router = Router(
        [
            Route("/predict", predict, methods=("POST",)),
            Route("/v1/chat/completions", chat, methods=("POST",), dialect=ErrorDialect.OPENAI),
            WebSocketRoute("/v1/websocket", relay),
            Mount("/admin", admin_app),
        ],
        fallback=Route("/", forward, methods=ANY_METHOD, name="forward"),
    )

An HTTP endpoint is ``async def endpoint(ex: Exchange) -> None``; a websocket
endpoint is ``async def endpoint(ws: WebSocket) -> None``; a mount is any ASGI
app. Paths match exactly (a trailing slash is forgiven). Besides its own paths,
a router answers the hosted platform's invocation URLs, so client code written
for them works unchanged:

    /environments/{env}/predict          -> /predict
    /environments/{env}/sync/{route}     -> /{route}
    /environments/{env}/websocket        -> /v1/websocket
    (and the same under /production, /development, /deployment/{id})

(mounts too: ``/environments/{env}/sync/v1/responses/{id}`` reaches the mount at
``/v1/responses``)

and, with ``any_model_name=True`` (a Model class's table: as Truss does), any model
name in the per-model URLs (a custom server gets those it does not route forwarded):

    /v1/models/{name}[/loaded|/schema|:predict|:predict_binary] -> /v1/models/model...
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kingpost.server.errors import ErrorDialect

if TYPE_CHECKING:
    from starlette.websockets import WebSocket

    from kingpost.server.exchange import Exchange

PLATFORM_PREFIX = re.compile(
    r"^/(?:environments/(?P<env>[^/]+)|(?P<named>production|development)|deployment/(?P<deployment>[^/]+))(?P<rest>/.*)?$"
)
MODEL_NAMED = re.compile(r"^/v1/models/[^/:]+(?P<rest>/loaded|/schema|:predict|:predict_binary)?$")
ANY_METHOD = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

Endpoint = Callable[["Exchange"], Awaitable[None]]
WebSocketEndpoint = Callable[["WebSocket"], Awaitable[None]]
ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


@dataclass(frozen=True)
class Route:
    """An HTTP route: a path, its endpoint, the methods it takes and its error dialect.

    ``name`` labels the route in metrics and the access log; ``logged=False``
    keeps it out of the access log (health checks and scrapes). With
    ``prefix=True`` the route also answers every path under ``path/`` (the
    endpoint reads the rest from ``ex.scope["path"]``): ``/async_request/{id}``.
    """

    path: str
    endpoint: Endpoint
    methods: Iterable[str] = ("GET",)
    name: str = ""
    dialect: ErrorDialect = ErrorDialect.KINGPOST
    logged: bool = True
    prefix: bool = False
    allow_header: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        methods = frozenset(self.methods)
        object.__setattr__(self, "methods", methods)
        object.__setattr__(self, "allow_header", ", ".join(sorted(methods)).encode())
        if not self.name:
            object.__setattr__(self, "name", self.path.strip("/") or "root")


@dataclass(frozen=True)
class WebSocketRoute:
    path: str
    endpoint: WebSocketEndpoint
    name: str = "websocket"


@dataclass(frozen=True)
class Mount:
    """Hands every path under ``prefix`` to another ASGI app (``scope["path"]`` less the prefix)."""

    prefix: str
    app: ASGIApp
    name: str = "mount"


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
    elif rest in ("/async_predict", "/async_queue_status"):
        local = rest
    elif rest.startswith("/sync/"):
        local = rest[len("/sync") :]
    elif rest == "/sync":
        local = "/predict"
    else:
        return None
    return PlatformPath(environment, local)


class Router:
    """Looks up the route of a path: exact match, then the platform grammar, then ``fallback``.

    ``fallback``, when set, answers every HTTP path no route matches (a custom
    server forwards those to its child process). ``any_model_name`` makes
    ``/v1/models/{name}...`` reach the ``/v1/models/model...`` routes.
    """

    def __init__(
        self,
        routes: Sequence[Route | WebSocketRoute | Mount] = (),
        fallback: Route | None = None,
        any_model_name: bool = False,
    ) -> None:
        self.any_model_name = any_model_name
        self.routes: dict[str, Route] = {}
        self.websockets: dict[str, WebSocketRoute] = {}
        self.mounts: list[Mount] = []
        self.prefixes: list[Route] = []
        self.fallback = fallback
        for route in routes:
            self.add(route)

    def add(self, route: Route | WebSocketRoute | Mount) -> None:
        if isinstance(route, Route):
            self.routes[route.path] = route
            if route.prefix:
                self.prefixes.append(route)
        elif isinstance(route, WebSocketRoute):
            self.websockets[route.path] = route
        else:
            self.mounts.append(route)

    def resolve(self, path: str) -> Route | Mount | None:
        """The HTTP route for ``path``: a route of its own, a mount above it, the fallback."""
        route = self.routes.get(path)
        if route is not None:
            return route
        if len(path) > 1 and path.endswith("/"):
            route = self.routes.get(path.rstrip("/"))
            if route is not None:
                return route
        local = path
        platform = split_platform_path(path)
        if platform is not None:
            local = platform.path
            route = self.routes.get(local)
            if route is not None:
                return route
        named = MODEL_NAMED.match(local) if self.any_model_name else None
        if named is not None:
            route = self.routes.get("/v1/models/model" + (named["rest"] or ""))
            if route is not None:
                return route
        for prefixed in self.prefixes:
            if path.startswith(prefixed.path + "/"):
                return prefixed
        if self.mounts:
            mount = self.mount_for(local)
            if mount is not None:
                return mount
        return self.fallback

    def resolve_websocket(self, path: str) -> WebSocketRoute | None:
        route = self.websockets.get(path)
        if route is None:
            platform = split_platform_path(path)
            if platform is not None:
                route = self.websockets.get(platform.path)
        return route

    @staticmethod
    def local_path(path: str) -> str:
        """The path a platform URL reaches (``/environments/e/sync/v1/x`` -> ``/v1/x``)."""
        platform = split_platform_path(path)
        return platform.path if platform is not None else path

    def mount_for(self, path: str) -> Mount | None:
        for mount in self.mounts:
            if path == mount.prefix or path.startswith(mount.prefix + "/"):
                return mount
        return None
