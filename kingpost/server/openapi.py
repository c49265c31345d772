"""The OpenAPI 3.1 document of the routes one model actually serves.

Built once at load time from the model's descriptor: ``/predict`` with the
pydantic input and output types of a typed pipeline (any JSON otherwise), the
``/v1`` routes of the hooks the model defines with the OpenAI and Anthropic
request and response types of :mod:`kingpost.protocols`, and the server's own
routes (health, readiness, metrics). Each route's errors are described in the
dialect the route answers in.

    document = build_openapi(descriptor, title="echo")
    document["paths"]["/predict"]["post"]["requestBody"]
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from kingpost.model.descriptor import ModelDescriptor
from kingpost.model.schema import ModelSchema, pydantic_model
from kingpost.protocols import (
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    EmbeddingList,
    EmbeddingRequest,
    Message,
    MessagesRequest,
    ResponseObject,
    ResponsesRequest,
)

REF_PREFIX = "#/components/schemas/"
JsonMode = Literal["validation", "serialization"]


@dataclass(frozen=True)
class EndpointRoute:
    """A ``/v1`` hook route: its path, wire types and error dialect."""

    hook: str
    path: str
    summary: str
    request: type[BaseModel]
    response: type[BaseModel]
    dialect: Literal["openai", "anthropic"]


ENDPOINT_ROUTES = (
    EndpointRoute(
        "chat_completions",
        "/v1/chat/completions",
        "OpenAI chat completions",
        ChatCompletionRequest,
        ChatCompletion,
        "openai",
    ),
    EndpointRoute(
        "completions",
        "/v1/completions",
        "OpenAI completions",
        CompletionRequest,
        Completion,
        "openai",
    ),
    EndpointRoute(
        "embeddings",
        "/v1/embeddings",
        "OpenAI embeddings",
        EmbeddingRequest,
        EmbeddingList,
        "openai",
    ),
    EndpointRoute(
        "responses", "/v1/responses", "OpenAI responses", ResponsesRequest, ResponseObject, "openai"
    ),
    EndpointRoute(
        "messages", "/v1/messages", "Anthropic messages", MessagesRequest, Message, "anthropic"
    ),
)

# Statuses any model route may answer besides 200 (CONTRACT.md, "Errors").
ERROR_STATUSES = {
    "400": "The body is not valid JSON or fails validation",
    "404": "The model does not define this hook",
    "413": "The body is over the size limit",
    "500": "The model raised an exception",
    "503": "The model is loading, unhealthy or the server is draining",
    "504": "The request ran past the request timeout",
}

KINGPOST_ERROR: dict[str, Any] = {
    "type": "object",
    "title": "KingpostError",
    "properties": {"error": {}},
    "required": ["error"],
}
OPENAI_ERROR: dict[str, Any] = {
    "type": "object",
    "title": "OpenAIError",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
            "required": ["message", "type"],
        }
    },
    "required": ["error"],
}
ANTHROPIC_ERROR: dict[str, Any] = {
    "type": "object",
    "title": "AnthropicError",
    "properties": {
        "type": {"const": "error"},
        "error": {
            "type": "object",
            "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
            "required": ["type", "message"],
        },
    },
    "required": ["type", "error"],
}
# One server-sent event (the shape OpenAPI 3.2 gives text/event-stream items).
SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "event": {"type": "string"},
        "data": {"type": "string"},
        "id": {"type": "string"},
        "retry": {"type": "integer"},
    },
    "required": ["data"],
}
_ERROR_SCHEMAS = {
    "kingpost": ("KingpostError", KINGPOST_ERROR),
    "openai": ("OpenAIError", OPENAI_ERROR),
    "anthropic": ("AnthropicError", ANTHROPIC_ERROR),
}


def kingpost_version() -> str:
    try:
        return version("kingpost")
    except PackageNotFoundError:
        return "0"


def build_openapi(
    descriptor: ModelDescriptor,
    *,
    title: str = "model",
    description: str | None = None,
    extra_routes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The OpenAPI document for a model; ``extra_routes`` adds path items (other routes).

    The ``x-kingpost`` extension names the model's hooks, for the playground.
    """
    builder = _DocumentBuilder()
    paths: dict[str, Any] = {}
    paths.update(_server_paths())
    if "predict" in descriptor.hooks:
        paths["/predict"] = {"post": builder.predict_operation(descriptor)}
    for route in ENDPOINT_ROUTES:
        if route.hook in descriptor.hooks:
            paths[route.path] = {"post": builder.endpoint_operation(route)}
    paths.update(extra_routes or {})
    schema = ModelSchema.from_descriptor(descriptor)
    if schema is not None:
        paths["/v1/models/model/schema"] = {
            "get": _simple_get("The JSON schemas of the predict pipeline", "model", {})
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": kingpost_version(),
            "description": description
            or "Served by Kingpost. Predict is also reached at /v1/models/model:predict, "
            "/invocations and the platform URLs (/environments/{env}/predict, "
            "/environments/{env}/sync/{route}).",
        },
        "paths": paths,
        "components": {"schemas": builder.components()},
        "x-kingpost": {
            "hooks": sorted(descriptor.hooks),
            "streaming": bool(schema and schema.supports_streaming),
            "websocket": descriptor.has_websocket,
        },
    }


class _DocumentBuilder:
    """Collects the pydantic models the operations name, then renders them once."""

    def __init__(self) -> None:
        # Each reference is filled in by components(), once pydantic has named every schema.
        self._refs: dict[tuple[type[BaseModel], JsonMode], list[dict[str, Any]]] = {}
        self._errors: set[str] = set()

    def ref(self, model: type[BaseModel], mode: JsonMode) -> dict[str, Any]:
        ref: dict[str, Any] = {}
        self._refs.setdefault((model, mode), []).append(ref)
        return ref

    def error_responses(self, dialect: str, statuses: dict[str, str]) -> dict[str, Any]:
        name, _ = _ERROR_SCHEMAS[dialect]
        self._errors.add(dialect)
        schema = {"$ref": f"{REF_PREFIX}{name}"}
        return {
            status: {"description": text, "content": {"application/json": {"schema": schema}}}
            for status, text in statuses.items()
        }

    def predict_operation(self, descriptor: ModelDescriptor) -> dict[str, Any]:
        predict = descriptor.hooks["predict"]
        first = descriptor.hooks.get("preprocess") or predict
        last = descriptor.hooks.get("postprocess") or predict
        schema = ModelSchema.from_descriptor(descriptor)
        input_model = pydantic_model(first.input_annotation)
        output_model = pydantic_model(last.return_annotation)
        body = self.ref(input_model, "validation") if input_model else {}
        result = self.ref(output_model, "serialization") if output_model else {}
        ok: dict[str, Any] = {"application/json": {"schema": result}}
        streams = schema is not None and schema.supports_streaming
        if streams or predict.kind.name.endswith("GENERATOR"):
            ok["application/octet-stream"] = {"schema": {"type": "string"}}
        operation: dict[str, Any] = {
            "summary": "Run the predict pipeline",
            "operationId": "predict",
            "responses": {
                "200": {"description": "The model's result", "content": ok},
                **self.error_responses("kingpost", ERROR_STATUSES),
            },
        }
        if first.takes_inputs:
            operation["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {"schema": body},
                    "application/octet-stream": {
                        "schema": {"type": "string", "format": "binary"},
                        "description": "the inputs as msgpack",
                    },
                },
            }
        return operation

    def endpoint_operation(self, route: EndpointRoute) -> dict[str, Any]:
        ok: dict[str, Any] = {
            "application/json": {"schema": self.ref(route.response, "serialization")}
        }
        if route.hook != "embeddings":
            ok["text/event-stream"] = {
                "schema": SSE_EVENT,
                "description": 'server-sent events, when the request sets "stream": true; '
                "each event's data is one JSON chunk of the API's stream",
            }
        return {
            "summary": route.summary,
            "operationId": route.hook,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": self.ref(route.request, "validation")}},
            },
            "responses": {
                "200": {"description": "The reply", "content": ok},
                **self.error_responses(route.dialect, ERROR_STATUSES),
            },
        }

    def components(self) -> dict[str, Any]:
        schemas: dict[str, Any] = {}
        if self._refs:
            keys, top = models_json_schema(list(self._refs), ref_template=REF_PREFIX + "{model}")
            schemas.update(top.get("$defs", {}))
            for key, refs in self._refs.items():
                for ref in refs:
                    ref.update(keys[key])
        for dialect in sorted(self._errors):
            name, schema = _ERROR_SCHEMAS[dialect]
            schemas[name] = schema
        return schemas


def _simple_get(summary: str, tag: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "summary": summary,
        "tags": [tag],
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": schema}}}
        },
    }


def _server_paths() -> dict[str, Any]:
    status = {"type": "object"}
    not_ready = {
        "description": "Not ready",
        "content": {"application/json": {"schema": KINGPOST_ERROR}},
    }
    readiness = _simple_get("Readiness: 200 once loaded and healthy", "health", status)
    readiness["responses"]["503"] = not_ready
    loaded = _simple_get("200 once the model is loaded", "health", status)
    loaded["responses"]["503"] = not_ready
    metrics = {
        "summary": "Prometheus metrics",
        "tags": ["health"],
        "responses": {
            "200": {
                "description": "The Prometheus text format",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    }
    models = _simple_get(
        "The served model, as the OpenAI model list",
        "model",
        {
            "type": "object",
            "properties": {"object": {"const": "list"}, "data": {"type": "array"}},
            "required": ["object", "data"],
        },
    )
    return {
        "/": {"get": _simple_get("Liveness: 200 while the process is up", "health", status)},
        "/v1/models/model": {"get": readiness},
        "/v1/models/model/loaded": {"get": loaded},
        "/v1/models": {"get": models},
        "/metrics": {"get": metrics},
    }
