"""How the worker runs one request: an ``Invoke`` callable, and the one that calls an ASGI app.

    async def invoke(request_id: str, body: bytes, cancelled: asyncio.Event) -> bytes

takes the JSON bytes of ``model_input`` and returns the JSON bytes of the
output, or raises ``InvokeFailure`` with the HTTP status the model's route
answered. ``cancelled`` is set when the work should stop (the request's lease
was lost, the server is shutting down); it reaches the model as a client
disconnect. ``kingpost serve`` uses ``AsgiInvoke`` on its own app, so async work
takes the same path as a sync ``/predict`` (limits, metrics, disconnects); the
platform passes one that sends the request to a replica.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

Invoke = Callable[[str, bytes, asyncio.Event], Awaitable[bytes]]

JSON = b"application/json"


class InvokeFailure(Exception):
    """The model's route answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_message(body: bytes, status: int) -> str:
    """The ``error`` field of a Kingpost error body, else the body's start."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
        return str(parsed["error"])
    text = body[:500].decode("utf-8", errors="replace").strip()
    return text or f"HTTP {status}"


def output_json(body: bytes, content_type: bytes) -> bytes:
    """A reply body as JSON: as it is if JSON, else as one JSON string."""
    if content_type.startswith(JSON):
        return body
    return orjson.dumps(body.decode("utf-8", errors="replace"))


class AsgiInvoke:
    """Call ``path`` of an ASGI app in process, as a client on 127.0.0.1 would."""

    def __init__(self, app: Callable[..., Awaitable[None]], path: str = "/predict") -> None:
        self.app = app
        self.path = path

    async def __call__(self, request_id: str, body: bytes, cancelled: asyncio.Event) -> bytes:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": self.path,
            "raw_path": self.path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"content-type", JSON),
                (b"accept", JSON),  # a streaming model's chunks come back gathered
                (b"content-length", str(len(body)).encode()),
                (b"x-request-id", request_id.encode()),
            ],
            "client": ("127.0.0.1", 0),
            "server": ("127.0.0.1", 0),
            "state": {},
            "extensions": {"kingpost.async": {}},
        }
        sent_body = False

        async def receive() -> dict[str, Any]:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            await cancelled.wait()
            return {"type": "http.disconnect"}

        status = 0
        content_type = b""
        chunks: list[bytes] = []

        async def send(message: dict[str, Any]) -> None:
            nonlocal status, content_type
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", ()):
                    if name.lower() == b"content-type":
                        content_type = value
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        try:
            await self.app(scope, receive, send)
        except Exception as exc:
            raise InvokeFailure(500, f"{type(exc).__name__}: {exc}") from exc
        reply = b"".join(chunks)
        if status == 200:
            return output_json(reply, content_type)
        if cancelled.is_set() or status == 499:
            raise InvokeFailure(499, "the request was stopped")
        raise InvokeFailure(status or 500, error_message(reply, status))
