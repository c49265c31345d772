"""The platform's own pages, served by the admin app: ``/metrics``, ``/playground``, ``/docs``.

The playground is the model server's page (:mod:`kingpost.observe.pages`)
with the metrics pane (this platform's ``/metrics``) and one extension pane,
``platform.js``: the models, environments and deployments of the admin API,
their replica counts, and a promote button. ``/docs`` and ``/openapi.json``
describe the admin API. Being routes of the admin app, they are behind
whatever guards it.

    add_pages(admin, platform.metrics, playground=True)
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kingpost.observe.pages import PlaygroundConfig, StaticBody, observe_routes
from kingpost.platform.metrics import PlatformMetrics

PLATFORM_MODULE = "/playground/platform.js"
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def playground_config(api: str) -> PlaygroundConfig:
    config = PlaygroundConfig(panes=["metrics"], openapi_path=f"{api}/openapi.json")
    config.add_extension("Platform", PLATFORM_MODULE, api, first=True)
    return config


def add_pages(admin: FastAPI, metrics: PlatformMetrics, api: str, playground: bool) -> None:
    """Put ``/metrics`` (and, when asked, the playground and docs) in the admin app."""

    async def scrape(_: Request) -> Response:
        return Response(metrics.render(), media_type=METRICS_TYPE)

    admin.router.routes.append(Route("/metrics", scrape, methods=["GET"], name="metrics"))
    if not playground:
        return
    document = admin.openapi()
    document.setdefault("info", {})["title"] = "Kingpost platform"
    pages = observe_routes(document, docs=True, playground=playground_config(api))
    module = files("kingpost.platform").joinpath("assets/platform.js").read_bytes()
    bodies = [(page.path, page.app) for page in pages]
    bodies.append((PLATFORM_MODULE, StaticBody(module, "text/javascript; charset=utf-8")))
    for path, body in bodies:
        admin.router.routes.append(Route(path, body, methods=["GET", "HEAD"]))
