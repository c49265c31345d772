"""What a hook is handed: the parsed body, and a Starlette ``Request`` if it asks for one."""

from __future__ import annotations

import threading
import weakref
from typing import Any

from starlette.requests import Request

from kingpost.jsonbody import DEFAULT_MAX_VALUES, parse_json
from kingpost.server.exchange import Exchange
from kingpost.server.replies import OCTET_STREAM


def parse_inputs(ex: Exchange, body: bytes, max_values: int = DEFAULT_MAX_VALUES) -> Any:
    """The body as JSON, or as msgpack when it was sent as ``application/octet-stream``.

    JSON holds at most ``max_values`` values (413 past it) and keeps big integers exact.
    """
    if ex.content_type.startswith(OCTET_STREAM):
        from kingpost.server.msgpack_codec import decode_msgpack

        return decode_msgpack(body)
    return parse_json(body, max_values)


def model_request(ex: Exchange, body: bytes) -> Request:
    """A Request for a hook that declares one; built only for such hooks."""
    request = Request(ex.scope, ex.receive_after_body)
    request._body = body  # the body was read already; hand the model the same bytes
    request.state.watch_disconnect = WatchDisconnect(ex)
    request.state.request_id = ex.request_id
    return request


class WatchDisconnect:
    """``request.state.watch_disconnect()``: the exchange's ``threading.Event``, set when
    the client goes away (or the request times out).

    The exchange is held weakly: the request's scope keeps this object, and the
    exchange keeps the scope, so a strong hold would make every such request a
    reference cycle left to the cycle collector. Asked after the request is over,
    it answers an event that is already set.
    """

    __slots__ = ("_exchange",)

    def __init__(self, ex: Exchange) -> None:
        self._exchange = weakref.ref(ex)

    def __call__(self) -> threading.Event:
        ex = self._exchange()
        if ex is not None:
            return ex.thread_event()
        gone = threading.Event()
        gone.set()
        return gone
