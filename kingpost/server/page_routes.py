"""The routes that show a model: ``/openapi.json``, ``/docs`` and, when asked, ``/playground``.

The bytes are prepared once, at load time (:mod:`kingpost.observe.pages`); each
request only picks a body and sends it.

    routes += page_routes(descriptor, title="gemma", playground=PlaygroundConfig())
"""

from __future__ import annotations

from kingpost.model.descriptor import ModelDescriptor
from kingpost.observe.pages import PlaygroundConfig, StaticBody, observe_routes
from kingpost.server.exchange import Exchange
from kingpost.server.openapi import build_openapi
from kingpost.server.routing import Route

PAGE_METHODS = ("GET", "HEAD")


class Page:
    """A route endpoint sending one prepared body (304 when the client's copy is current)."""

    def __init__(self, body: StaticBody) -> None:
        self.body = body

    async def __call__(self, ex: Exchange) -> None:
        status, body = self.body.answer(ex.scope)
        await ex.send_bytes(status, body, self.body.content_type, self.body.headers)


def page_routes(
    descriptor: ModelDescriptor, *, title: str, playground: PlaygroundConfig | None = None
) -> list[Route]:
    document = build_openapi(descriptor, title=title)
    return [
        # Pages and their assets stay out of the access log, like health checks.
        Route(page.path, Page(page.app), PAGE_METHODS, name=page.name, logged=False)
        for page in observe_routes(document, playground=playground)
    ]
