"""``/v1/responses/{id}`` and below, for a model that keeps its responses (the LLM engines).

    GET    /v1/responses/{id}                 the stored response (?stream=true&starting_after=N
                                              replays a background response's events after N)
    DELETE /v1/responses/{id}
    GET    /v1/responses/{id}/input_items     ?after=&limit=&order=
    POST   /v1/responses/{id}/cancel          a background response

Mounted under ``/v1/responses`` (its POST routes keep their own exact paths); each calls
the model's method of that name, and errors answer in OpenAI's shape.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, Router

from kingpost.errors import InvalidParameterError, NotReadyError, RequestError
from kingpost.server.model_service import ModelService

PREFIX = "/v1/responses"
METHODS = ("retrieve_response", "delete_response", "response_input_items", "cancel_response")


def serves_stored_responses(model_class: type) -> bool:
    return all(callable(getattr(model_class, name, None)) for name in METHODS)


def stored_responses_app(service: ModelService) -> ExceptionMiddleware:
    """The ASGI app mounted at ``/v1/responses``."""

    def model() -> Any:
        service.check_ready()
        if service.lifecycle.model is None:
            raise NotReadyError("model is not ready")
        return service.lifecycle.model

    async def retrieve(request: Request) -> Response:
        query = request.query_params
        after = query.get("starting_after")
        if after is not None and not after.lstrip("-").isdigit():
            raise InvalidParameterError("starting_after", "must be an integer")
        result = await model().retrieve_response(
            request.path_params["response_id"],
            stream=query.get("stream", "false").lower() == "true",
            starting_after=int(after) if after is not None else None,
        )
        if isinstance(result, AsyncIterator):
            return StreamingResponse(result, media_type="text/event-stream")
        return JSONResponse(result)

    async def delete(request: Request) -> Response:
        return JSONResponse(await model().delete_response(request.path_params["response_id"]))

    async def input_items(request: Request) -> Response:
        query = request.query_params
        limit = query.get("limit", "20")
        if not limit.isdigit():
            raise InvalidParameterError("limit", "must be an integer")
        result = await model().response_input_items(
            request.path_params["response_id"],
            after=query.get("after"),
            limit=int(limit),
            order=query.get("order", "desc"),
        )
        return JSONResponse(result)

    async def cancel(request: Request) -> Response:
        return JSONResponse(await model().cancel_response(request.path_params["response_id"]))

    async def openai_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestError)
        param = exc.param if isinstance(exc, InvalidParameterError) else None
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        body = {"error": {"message": exc.message, "type": kind, "param": param, "code": None}}
        return JSONResponse(body, status_code=exc.status_code)

    routes = Router(
        routes=[
            Route("/{response_id}", retrieve, methods=["GET"]),
            Route("/{response_id}", delete, methods=["DELETE"]),
            Route("/{response_id}/input_items", input_items, methods=["GET"]),
            Route("/{response_id}/cancel", cancel, methods=["POST"]),
        ],
    )
    return ExceptionMiddleware(routes, handlers={RequestError: openai_error})
