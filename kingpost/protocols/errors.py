"""Request validation and the error bodies of the OpenAI and Anthropic APIs.

Engines validate a request body with :func:`parse_request`; a bad parameter raises
:class:`InvalidParameterError`, which names the parameter and renders itself in
either API's error shape with status 400.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.responses import JSONResponse

from kingpost.errors import InvalidInputError
from kingpost.protocols.sse import sse_event

RequestT = TypeVar("RequestT", bound=BaseModel)


class InvalidParameterError(InvalidInputError):
    """A request parameter is missing, malformed or unsupported (HTTP 400)."""

    def __init__(self, param: str | None, message: str, code: str | None = None) -> None:
        super().__init__(f"{param}: {message}" if param else message)
        self.param = param
        self.code = code

    def openai_response(self) -> JSONResponse:
        return openai_error(self.message, param=self.param, code=self.code)

    def anthropic_response(self) -> JSONResponse:
        return anthropic_error(self.message)


def openai_error(
    message: str,
    *,
    param: str | None = None,
    type: str = "invalid_request_error",
    code: str | None = None,
    status_code: int = 400,
) -> JSONResponse:
    """An OpenAI-shaped error: ``{"error": {"message", "type", "param", "code"}}``."""
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return JSONResponse(body, status_code=status_code)


def anthropic_error(
    message: str, *, type: str = "invalid_request_error", status_code: int = 400
) -> JSONResponse:
    """An Anthropic-shaped error: ``{"type": "error", "error": {"type", "message"}}``."""
    body = {"type": "error", "error": {"type": type, "message": message}}
    return JSONResponse(body, status_code=status_code)


def openai_stream_error(message: str, *, type: str = "server_error") -> str:
    """An error inside an OpenAI stream, once the 200 is sent; the openai SDK raises APIError."""
    error = {"message": message, "type": type, "param": None, "code": None}
    return sse_event({"error": error})


def anthropic_stream_error(message: str, *, type: str = "api_error") -> str:
    """An Anthropic ``error`` event inside a stream, once the 200 is sent."""
    return sse_event({"type": "error", "error": {"type": type, "message": message}}, event="error")


def parse_request(model: type[RequestT], inputs: Mapping[str, Any] | Any) -> RequestT:
    """Validate a request body; raise InvalidParameterError naming the first bad parameter.

    >>> parse_request(ChatCompletionRequest, {"messages": []})  # doctest: +SKIP
    InvalidParameterError: messages: List should have at least 1 item ...
    """
    if not isinstance(inputs, Mapping):
        raise InvalidParameterError(None, "the request body must be a JSON object")
    try:
        return model.model_validate(inputs)
    except ValidationError as exc:
        # within a union the deepest error says what is wrong ("content[0].type"), not "str"
        worst = max(exc.errors(include_url=False), key=lambda error: len(error["loc"]))
        raise InvalidParameterError(parameter_path(worst["loc"]), worst["msg"]) from None


def parameter_path(loc: tuple[int | str, ...]) -> str | None:
    """Render a pydantic error location the way API errors name parameters: ``messages[0].role``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not _is_union_tag(part):
            path += f".{part}" if path else part
    return path or None


def _is_union_tag(part: str) -> bool:
    # pydantic inserts the union member's name ("str", "list[ContentPart]", "function-after[...]")
    return "[" in part or part[:1].isupper() or part in {"str", "int", "float", "bool", "dict"}
