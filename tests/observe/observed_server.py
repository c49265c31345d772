"""``python -m tests.observe.observed_server DIR --port N [--dev]``: a model server with
the observe routes (/openapi.json, /docs, /playground with --dev) put in front of it.

A stand-in for the core's route table until the observe routes are part of it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import uvicorn

from kingpost.logs import configure_logging
from kingpost.observe.openapi import build_openapi
from kingpost.observe.pages import PlaygroundConfig, observe_routes
from kingpost.server.runner import ServeOptions, build_app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dev", action="store_true")
    args = parser.parse_args()
    configure_logging("warning", "text")
    model_app = build_app(ServeOptions(model_dir=args.model_dir, port=args.port, dev=args.dev))
    title = model_app.source.config.model_name or "model"
    document = build_openapi(model_app.descriptor, title=title)
    playground = PlaygroundConfig() if args.dev else None
    table = {route.path: route.app for route in observe_routes(document, playground=playground)}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        route = table.get(scope.get("path", "")) if scope["type"] == "http" else None
        if route is not None:
            await route(scope, receive, send)
        else:
            await model_app(scope, receive, send)

    uvicorn.run(app, host="127.0.0.1", port=args.port, lifespan="on", log_level="warning")


if __name__ == "__main__":
    main()
