"""The route table of a Model class: what ``kingpost serve`` answers for a model.

    service = ModelService(source, descriptor, metrics, drain)
    app = ServerApp(model_routes(service, metrics), service=service, drain=drain)

A mode or feature that adds routes builds on the list: ``model_routes(...)``
returns a ``Router`` and ``Router.add(route)`` appends to it.
"""

from __future__ import annotations

import orjson

from kingpost.model.schema import ModelSchema
from kingpost.observe.pages import PlaygroundConfig
from kingpost.server.endpoints import ENDPOINT_ROUTES, EndpointHook
from kingpost.server.metrics import ServerMetrics
from kingpost.server.model_service import ModelService
from kingpost.server.page_routes import page_routes
from kingpost.server.predict import Predict
from kingpost.server.probes import Loaded, Metrics, ModelList, Readiness, Schema, liveness
from kingpost.server.routing import Route, Router, WebSocketRoute
from kingpost.server.websocket import ModelWebSocket

HEALTH = ("GET", "HEAD")


def model_routes(
    service: ModelService, metrics: ServerMetrics, playground: PlaygroundConfig | None = None
) -> Router:
    lifecycle = service.lifecycle
    readiness = Readiness(lifecycle, service.drain)
    predict = Predict(service)
    schema = ModelSchema.from_descriptor(service.descriptor)
    name = service.source.config.model_name or "model"
    routes: list[Route | WebSocketRoute] = [
        Route("/", liveness, HEALTH, name="liveness", logged=False),
        Route("/v1/models/model", readiness, HEALTH, name="readiness", logged=False),
        Route("/v1/models/model/loaded", Loaded(lifecycle), HEALTH, name="loaded"),
        Route(
            "/v1/models/model/schema",
            Schema(orjson.dumps(schema.as_dict()) if schema is not None else None),
            name="schema",
        ),
        Route("/v1/models", ModelList(name, lifecycle), name="models"),
        Route("/metrics", Metrics(metrics), name="metrics", logged=False),
        Route("/predict", predict, ("POST",), name="predict"),
        Route("/v1/models/model:predict", predict, ("POST",), name="predict"),
        # SageMaker's container contract: health on /ping, inference on /invocations.
        Route("/ping", readiness, ("GET",), name="readiness", logged=False),
        Route("/invocations", predict, ("POST",), name="predict"),
    ]
    for hook, (path, dialect) in ENDPOINT_ROUTES.items():
        routes.append(
            Route(path, EndpointHook(service, hook), ("POST",), name=hook, dialect=dialect)
        )
    routes += page_routes(service.descriptor, title=name, playground=playground)
    if service.descriptor.has_websocket:
        routes.append(WebSocketRoute("/v1/websocket", ModelWebSocket(lifecycle, service.drain)))
    return Router(routes)
