"""What a hook is handed: the parsed body, and a Starlette ``Request`` if it asks for one."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from kingpost.errors import InvalidInputError
from kingpost.server.exchange import Exchange
from kingpost.server.replies import OCTET_STREAM


def parse_inputs(ex: Exchange, body: bytes) -> Any:
    """The body as JSON, or as msgpack when it was sent as ``application/octet-stream``."""
    if ex.content_type.startswith(OCTET_STREAM):
        from kingpost.server.msgpack_codec import decode_msgpack

        return decode_msgpack(body)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInputError(f"request body is not valid JSON: {exc}") from None


def model_request(ex: Exchange, body: bytes) -> Request:
    """A Request for a hook that declares one; built only for such hooks."""
    request = Request(ex.scope, ex.receive_after_body)
    request._body = body  # the body was read already; hand the model the same bytes
    request.state.watch_disconnect = ex.thread_event
    request.state.request_id = ex.request_id
    return request
