"""Replies: what a route handler answers with; each one sends itself.

    await JSONReply({"ok": True}).send(ex)
    await reply_for(result, as_msgpack=False).send(ex)   # what a hook returned
    await ErrorReply(503, b'{"error":"model is not ready"}').send(ex)

``reply_for`` picks the reply for a hook's result: a Starlette ``Response`` the
model built passes through unchanged (plus ``x-request-id``), anything else is
encoded as JSON, or as msgpack when the request body was msgpack. Streams are
replies too (``kingpost.server.streaming.HookStream``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from pydantic import BaseModel
from starlette.responses import Response

from kingpost.server.exchange import request_id_headers

if TYPE_CHECKING:
    from kingpost.server.exchange import Exchange, Message

JSON = b"application/json"
EVENT_STREAM = b"text/event-stream"
OCTET_STREAM = b"application/octet-stream"
METRICS_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
_ORJSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS

Headers = tuple[tuple[bytes, bytes], ...]


class Reply(Protocol):
    def send(self, ex: Exchange) -> Awaitable[None]: ...


def _json_default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if hasattr(value, "tolist"):  # numpy scalars and arrays not covered by orjson
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dump_json(value: Any) -> bytes:
    if isinstance(value, BaseModel):
        return value.__pydantic_serializer__.to_json(value)
    try:
        return orjson.dumps(value, default=_json_default, option=_ORJSON_OPTIONS)
    except orjson.JSONEncodeError:
        # orjson stops at 64-bit integers; the standard library writes any integer exactly.
        return json.dumps(value, default=_json_default, separators=(",", ":")).encode()


class BytesReply:
    """A complete body of one content type."""

    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self, body: bytes, content_type: bytes = JSON, status: int = 200, headers: Headers = ()
    ) -> None:
        self.body = body
        self.content_type = content_type
        self.status = status
        self.headers = headers

    def send(self, ex: Exchange) -> Awaitable[None]:
        # The awaitable of send_bytes itself: no coroutine of our own on the hot path.
        return ex.send_bytes(self.status, self.body, self.content_type, self.headers)


class JSONReply(BytesReply):
    __slots__ = ()

    def __init__(self, value: Any, status: int = 200) -> None:
        # Set directly rather than through BytesReply.__init__: this is on every request.
        self.body = dump_json(value)
        self.content_type = JSON
        self.status = status
        self.headers = ()


class MsgpackReply(BytesReply):
    __slots__ = ()

    def __init__(self, value: Any) -> None:
        from kingpost.server.msgpack_codec import encode_msgpack

        super().__init__(encode_msgpack(value), OCTET_STREAM)


@dataclass(frozen=True)
class ErrorReply:
    """An error body already rendered in the route's dialect (``kingpost.server.errors``)."""

    status: int
    body: bytes
    headers: Headers = ()

    def send(self, ex: Exchange) -> Awaitable[None]:
        return ex.send_bytes(self.status, self.body, JSON, self.headers)


class PassthroughReply:
    """A Response the model built, sent as it is, with the request id added."""

    __slots__ = ("response",)

    def __init__(self, response: Response) -> None:
        self.response = response

    def send(self, ex: Exchange) -> Awaitable[None]:
        return self._send(ex)

    async def _send(self, ex: Exchange) -> None:
        ids = request_id_headers(ex.request_id)

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                ex.status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), *ids]}
            await ex.send(message)

        await self.response(ex.scope, ex.receive_after_body, send)


def reply_for(result: Any, as_msgpack: bool) -> Reply:
    """The reply for what a hook returned."""
    if isinstance(result, Response):
        return PassthroughReply(result)
    if as_msgpack:
        return MsgpackReply(result)
    return JSONReply(result)
