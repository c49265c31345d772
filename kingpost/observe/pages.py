"""The routes that show a model: ``/openapi.json``, ``/docs`` and ``/playground``.

Each is a :class:`StaticBody` answering GET and HEAD from bytes prepared at
load time: a plain ASGI app, whose ``answer(scope)`` a server core can also
send itself (``kingpost.server.page_routes`` puts them in the route table):

    for page in observe_routes(document, playground=PlaygroundConfig()):
        page.path, page.name, page.app.answer(scope)

The playground's page asks ``/playground/config.json`` what to show. Its
``panes`` list names the built-in panes; ``extensions`` adds panes from other
parts of Kingpost, each an ES module with ``export function mount(element,
context)`` and the base URL of the API it talks to (the platform's admin API
adds its models, deployments and environments this way).
"""

from __future__ import annotations

import hashlib
import mimetypes
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any

import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

ASSETS_PACKAGE = "kingpost.observe"
ASSETS_DIR = "assets"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


class StaticBody:
    """An ASGI app answering GET/HEAD with one body (ETag and 304 included)."""

    def __init__(self, body: bytes, content_type: str, cache: str = "no-cache") -> None:
        self.body = body
        self.content_type = content_type.encode()
        self.etag = b'"' + hashlib.sha1(body).hexdigest()[:16].encode() + b'"'
        self.headers = [
            (b"etag", self.etag),
            (b"cache-control", cache.encode()),
            (b"x-content-type-options", b"nosniff"),
        ]

    def answer(self, scope: Scope) -> tuple[int, bytes]:
        """The status and body for a GET or HEAD (304 when the client's copy is current)."""
        for name, value in scope.get("headers", ()):
            if name == b"if-none-match" and value == self.etag:
                return 304, b""
        return 200, b"" if scope.get("method") == "HEAD" else self.body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("method", "GET") not in ("GET", "HEAD"):
            await _send(send, 405, b'{"error":"only GET and HEAD"}', "application/json")
            return
        status, body = self.answer(scope)
        headers = [
            (b"content-type", self.content_type),
            (b"content-length", str(len(body)).encode()),
            *self.headers,
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def _send(send: Send, status: int, body: bytes, content_type: str) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@dataclass(frozen=True)
class PageRoute:
    path: str
    name: str
    app: StaticBody


@dataclass
class PlaygroundConfig:
    """What the playground page shows; ``extensions`` are panes from elsewhere."""

    panes: list[str] = field(default_factory=lambda: ["status", "predict", "chat", "metrics"])
    extensions: list[dict[str, Any]] = field(default_factory=list)
    metrics_path: str = "/metrics"
    openapi_path: str = "/openapi.json"

    def add_extension(self, title: str, module: str, api: str, first: bool = False) -> None:
        """A pane: ``module`` is an ES module URL exporting ``mount(element, context)``.

        ``first`` puts it above the built-in panes (the platform's pane, on the platform).
        """
        extension: dict[str, Any] = {"title": title, "module": module, "api": api}
        if first:
            extension["first"] = True
        self.extensions.append(extension)

    def as_json(self) -> bytes:
        return orjson.dumps(
            {
                "panes": self.panes,
                "extensions": self.extensions,
                "metrics": self.metrics_path,
                "openapi": self.openapi_path,
            }
        )


def read_assets() -> dict[str, bytes]:
    """Every file under ``kingpost/observe/assets``, by its path below that folder."""
    found: dict[str, bytes] = {}
    pending = [(files(ASSETS_PACKAGE) / ASSETS_DIR, "")]
    while pending:
        folder, prefix = pending.pop()
        for entry in folder.iterdir():
            if entry.is_dir():
                pending.append((entry, f"{prefix}{entry.name}/"))
            elif not entry.name.startswith("."):
                found[prefix + entry.name] = entry.read_bytes()
    return found


def _asset_app(name: str, body: bytes) -> StaticBody:
    suffix = name[name.rfind(".") :]
    content_type = CONTENT_TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "text/plain"
    return StaticBody(body, content_type)


def observe_routes(
    document: dict[str, Any],
    *,
    docs: bool = True,
    playground: PlaygroundConfig | None = None,
) -> list[PageRoute]:
    """The routes for an OpenAPI document, its docs page and (when given) the playground."""
    routes = [
        PageRoute(
            "/openapi.json", "openapi", StaticBody(orjson.dumps(document), "application/json")
        )
    ]
    if not docs and playground is None:
        return routes
    assets = read_assets()
    shared = {name: body for name, body in assets.items() if not name.endswith(".html")}
    if docs:
        routes.append(PageRoute("/docs", "docs", _asset_app("docs.html", assets["docs.html"])))
        routes += [
            PageRoute(f"/docs/assets/{name}", "docs", _asset_app(name, body))
            for name, body in shared.items()
        ]
    if playground is not None:
        page = _asset_app("playground.html", assets["playground.html"])
        routes.append(PageRoute("/playground", "playground", page))
        routes.append(
            PageRoute(
                "/playground/config.json",
                "playground",
                StaticBody(playground.as_json(), "application/json"),
            )
        )
        routes += [
            PageRoute(f"/playground/assets/{name}", "playground", _asset_app(name, body))
            for name, body in shared.items()
        ]
    return routes
