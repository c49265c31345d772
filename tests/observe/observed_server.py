"""``python -m tests.observe.observed_server DIR --port N [--dev]``: a model server with
what kingpost.observe adds put around it: the /openapi.json, /docs and (with --dev)
/playground routes, the generation metrics, and tracing when the OTEL_* variables
ask for it.

A stand-in for the core's route table and request path until these are part of it.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn
from prometheus_client.registry import Collector

from kingpost.logs import configure_logging
from kingpost.observe.metrics import GENERATIONS, Labels
from kingpost.observe.openapi import build_openapi
from kingpost.observe.pages import PlaygroundConfig, observe_routes
from kingpost.observe.tracing import TracedApp, configure
from kingpost.server.runner import ServeOptions, build_app


class _Generations(Collector):
    def __init__(self, model_name: str) -> None:
        self.labels = Labels({})

    def collect(self) -> Iterator[Any]:
        return GENERATIONS.collect(self.labels)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dev", action="store_true")
    args = parser.parse_args()
    configure_logging("warning", "text")
    model_app = build_app(ServeOptions(model_dir=args.model_dir, port=args.port, dev=args.dev))
    config = model_app.source.config
    title = config.model_name or "model"
    model_app.metrics.registry.register(_Generations(title))
    document = build_openapi(model_app.descriptor, title=title)
    playground = PlaygroundConfig() if args.dev else None
    table = {route.path: route.app for route in observe_routes(document, playground=playground)}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        route = table.get(scope.get("path", "")) if scope["type"] == "http" else None
        if route is not None:
            await route(scope, receive, send)
        else:
            await model_app(scope, receive, send)

    served: Any = app
    tracing = configure(config.runtime.enable_tracing_data, service_name=title)
    if tracing is not None:
        startup = model_app.startup

        def traced_startup() -> None:
            startup()
            model_app.lifecycle.on_loaded(
                lambda _: model_app.runners.update(
                    {name: tracing.traced_hook(r) for name, r in model_app.runners.items()}
                )
            )

        model_app.startup = traced_startup  # type: ignore[method-assign]

        def route_of(path: str) -> str:
            route = model_app.router.resolve(path)
            return route.name if route is not None else "unknown"

        served = TracedApp(app, tracing, route_of)
    try:
        uvicorn.run(served, host="127.0.0.1", port=args.port, lifespan="on", log_level="warning")
    finally:
        if tracing is not None:
            tracing.shutdown()


if __name__ == "__main__":
    main()
