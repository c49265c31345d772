"""Kingpost's front process for Ray: an ASGI app that hands requests to replicas.

Each HTTP request becomes one streaming call on a Serve deployment handle
(``handle_request``): Serve picks the replica (least loaded, parking requests
while replicas start, scale from zero included), the replica runs the request
through the model's own app and streams back its send messages. When the
client goes away the call is cancelled, which the replica turns into an
``http.disconnect`` for the app.

A websocket is one streaming call too (``handle_websocket``): the replica's
messages come back as its reply, the client's go through the front's
``WebSocketInbox`` actor (``sockets.py``). Close codes are the replica app's,
as ``kingpost serve`` gives them; a client that leaves is a
``websocket.disconnect`` for the replica's handler.

Through Ray Client (``ray://``) Serve offers no streaming handles: there each
reply comes back whole (``handle_request_whole``), a stream at its end, and
websockets are refused (close 1011).

The front answers liveness (``/``) itself; everything else, readiness
included, is the replica's answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson

from kingpost.scale.wire import RequestHead

logger = logging.getLogger("kingpost.scale")

Scope = dict[str, Any]
JSON = b"application/json"
# After a websocket's client left, how long the replica's handler may take to end.
_WIND_DOWN_SECONDS = 10.0


class RayFrontApp:
    """ASGI app forwarding HTTP to a Serve deployment handle.

    ``app_name`` names the Serve application of a ``KingpostReplica`` deployment.
    The handle is made on the event loop that serves (at lifespan startup, or the
    first request), which Serve needs when its router runs on the caller's loop.
    """

    def __init__(self, app_name: str, max_request_bytes: int) -> None:
        from ray import exceptions as ray_errors
        from ray.serve import exceptions as serve_errors

        self.app_name = app_name
        self.stream: Any = None
        self.socket_stream: Any = None
        self.inbox: Any = None
        self.whole_replies = False  # connected through Ray Client: no streaming handles
        self.max_request_bytes = max_request_bytes
        self.draining = False
        self.in_flight = 0
        self._replica_gone = (ray_errors.ActorDiedError, ray_errors.ActorUnavailableError)
        self._no_capacity = (
            serve_errors.BackPressureError,
            serve_errors.DeploymentUnavailableError,
        )
        self._cancelled = (serve_errors.RequestCancelledError, ray_errors.TaskCancelledError)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.handle_http(scope, receive, send)
        elif kind == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                self.open_handle()
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
        elif kind == "websocket":
            await self.handle_websocket(scope, receive, send)

    async def handle_http(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["path"] == "/" and scope["method"] in ("GET", "HEAD"):
            await _reply(send, 200, b'{"status":"alive"}')
            return
        if self.draining:
            await _reply(send, 503, b'{"error":"the server is shutting down"}')
            return
        try:
            body = await self._read_body(receive)
        except _TooLarge as exc:
            await _reply(send, 413, orjson.dumps({"error": str(exc)}))
            return
        if body is None:
            return  # the client left while sending its body
        self.in_flight += 1
        try:
            await self._forward(RequestHead.from_scope(scope, body), receive, send)
        finally:
            self.in_flight -= 1

    async def _read_body(self, receive: Any) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > self.max_request_bytes:
                    raise _TooLarge(self.max_request_bytes)
                chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def open_handle(self) -> Any:
        if self.stream is None:
            from ray import serve
            from ray.util.client import ray as client

            handle = serve.get_app_handle(self.app_name)
            self.whole_replies = client.is_connected()
            if self.whole_replies:
                self.stream = handle.options(method_name="handle_request_whole")
            else:
                self.stream = handle.options(method_name="handle_request", stream=True)
                self.socket_stream = handle.options(method_name="handle_websocket", stream=True)
        return self.stream

    async def handle_websocket(self, scope: Scope, receive: Any, send: Any) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        if self.draining:
            await send({"type": "websocket.close", "code": 1013, "reason": "shutting down"})
            return
        self.open_handle()
        if self.socket_stream is None:
            # Accepted, then closed: the close code reaches the client (a refusal is a 403).
            reason = "websockets need a direct connection to the Ray cluster, not ray://"
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": 1011, "reason": reason})
            return
        if self.inbox is None:
            from kingpost.scale.sockets import start_inbox

            self.inbox = start_inbox()
        session = uuid.uuid4().hex
        head = RequestHead.from_scope(scope, b"")
        response = self.socket_stream.remote(head, self.inbox, session)
        left = asyncio.Event()
        pump = asyncio.ensure_future(_pump_client(receive, self.inbox, session, response, left))
        accepted = closed = False
        self.in_flight += 1
        try:
            async for batch in response:
                for message in batch:
                    await send(message)
                    accepted = accepted or message["type"] == "websocket.accept"
                    closed = closed or message["type"] == "websocket.close"
        except self._cancelled:
            closed = True  # the client left: nothing more to say
        except self._replica_gone as exc:
            logger.warning("a replica went away during a websocket: %s", type(exc).__name__)
        except self._no_capacity as exc:
            logger.warning("no replica for a websocket: %s", exc)
        except OSError:  # the client went away while the replica was still sending
            response.cancel()
            closed = True
        except Exception:
            logger.exception("forwarding a websocket to Ray failed")
        finally:
            self.in_flight -= 1
            pump.cancel()
            self.inbox.forget.remote(session)
        if not (closed or left.is_set()):
            # The replica went away: 1011 as the core gives a failed hook (403 before accept).
            reason = "the replica serving this websocket crashed" if accepted else ""
            with contextlib.suppress(Exception):  # the client may be gone too
                await send({"type": "websocket.close", "code": 1011, "reason": reason})

    async def _forward(self, head: RequestHead, receive: Any, send: Any) -> None:
        response = (self.stream or self.open_handle()).remote(head)
        watcher = asyncio.ensure_future(_cancel_on_disconnect(receive, response))
        started = False
        try:
            async for batch in self._batches(response):
                for message in batch:
                    await send(message)
                started = True
        except self._cancelled:
            return  # cancelled because the client left; nothing more to say
        except self._replica_gone as exc:
            logger.warning("a replica went away during a request: %s", type(exc).__name__)
            if not started:
                await _reply(send, 502, b'{"error":"the replica serving this request crashed"}')
            # Started: leave the response incomplete so the client sees a failure.
        except self._no_capacity as exc:
            if not started:
                await _reply(send, 503, orjson.dumps({"error": f"no replica available: {exc}"}))
        except Exception:
            logger.exception("forwarding a request to Ray failed")
            if not started:
                await _reply(send, 500, b'{"error":"internal server error"}')
        finally:
            watcher.cancel()

    async def _batches(self, response: Any) -> AsyncIterator[list[Any]]:
        if self.whole_replies:
            yield await response
        else:
            async for batch in response:
                yield batch


class _TooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is larger than {limit} bytes")


async def _pump_client(
    receive: Any, inbox: Any, session: str, response: Any, left: asyncio.Event
) -> None:
    """The client's messages into the inbox, in order, until it disconnects."""
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            left.set()
        await inbox.put.remote(session, message)
        if left.is_set():
            break
    # The handler has the disconnect; one that does not end by itself is cancelled.
    await asyncio.sleep(_WIND_DOWN_SECONDS)
    response.cancel()


async def _cancel_on_disconnect(receive: Any, response: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    response.cancel()


async def _reply(send: Any, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", JSON), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
