"""Request validation and the error bodies of the OpenAI and Anthropic APIs, as bytes.

Engines validate a request body with :func:`parse_request`; a bad parameter raises
:class:`~kingpost.errors.InvalidParameterError`, and the server renders it in the
error shape of the route it was raised on (status 400). The body builders here are
what that rendering uses; they are public for code that writes its own responses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from kingpost.errors import InvalidParameterError
from kingpost.protocols.sse import sse_event

RequestT = TypeVar("RequestT", bound=BaseModel)


def openai_error_body(
    message: str,
    *,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> bytes:
    """An OpenAI error object: ``{"error": {"message", "type", "param", "code"}}``.

    >>> openai_error_body("n: must be 1", param="n")
    b'{"error":{"message":"n: must be 1","type":"invalid_request_error","param":"n","code":null}}'
    """
    return orjson.dumps({"error": {"message": message, "type": type, "param": param, "code": code}})


def anthropic_error_body(message: str, *, type: str = "invalid_request_error") -> bytes:
    """An Anthropic error: ``{"type": "error", "error": {"type", "message"}}``."""
    return orjson.dumps({"type": "error", "error": {"type": type, "message": message}})


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
