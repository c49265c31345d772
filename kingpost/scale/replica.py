"""The Serve deployment that hosts one model directory in each replica.

A replica builds the same ASGI app ``kingpost serve`` builds (the composition
root hands its ``build_app`` over in the ``ReplicaSpec``, by reference) and runs
every request through it, so hooks, streams, errors, disconnects and
the URL grammar behave as on one machine. Two ways in:

- ``handle_request(head)``: a streaming handle call from Kingpost's front
  process (the fast path). When the caller cancels (its client left), the app
  receives ``http.disconnect``, exactly as from uvicorn: async hooks are
  cancelled and sync hooks' disconnect event is set.
- ``handle_websocket(head, inbox, session)``: a websocket from the front. The
  reply stream carries the app's messages (accept, frames, close); the client's
  messages arrive through the front's ``WebSocketInbox`` under ``session``. A
  cancelled call (the front lost its client) is a ``websocket.disconnect``.
- ``handle_request_whole(head)``: the same, answered in one piece, for a front
  connected through Ray Client (``ray://``), where Serve has no streaming handles.
- Serve's own HTTP proxy, through ``__serve_build_asgi_app__`` (the same app).

The replica is ready once the model has loaded; ``check_health`` asks the
model's ``is_healthy``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray import serve

from kingpost.errors import ModelLoadError
from kingpost.logs import configure_logging
from kingpost.scale.sockets import GONE
from kingpost.scale.wire import Batch, Message, RequestHead

if TYPE_CHECKING:
    from kingpost.serve import ServeOptions
    from kingpost.server.app import ServerApp

logger = logging.getLogger("kingpost.scale")

REPLICA_HEADER = b"x-kingpost-replica"
READINESS_PATH = "/v1/models/model"
# After the caller goes away, how long the app may take to notice and wind down.
_WIND_DOWN_SECONDS = 10.0


@dataclass(frozen=True)
class ReplicaSpec:
    """What a replica needs to build the model's app (sent to every replica)."""

    options: ServeOptions
    # The composition root's app builder (a module-level function: pickled by name).
    build_app: Callable[[ServeOptions], ServerApp]
    log_format: str = "text"
    # The model directory was shipped with the runtime env: it is the replica's cwd.
    shipped: bool = False

    def serve_options(self) -> ServeOptions:
        if self.shipped:
            return replace(self.options, model_dir=Path.cwd())
        return self.options


class _ReplicaAsgi:
    """The model's ASGI app as Serve's proxy sees it: lifespan already done, replica header."""

    def __init__(self, app: ServerApp, replica_header: tuple[bytes, bytes]) -> None:
        self.app = app
        self.header = replica_header

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            # The replica started the app itself (see KingpostReplica.__init__).
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return

        async def tagged_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), self.header]}
            await send(message)

        await self.app(scope, receive, tagged_send)


class ReplicaBase:
    async def __init__(self, spec: ReplicaSpec) -> None:  # type: ignore[misc]
        options = spec.serve_options()
        configure_logging(options.log_level, spec.log_format)
        context = serve.get_replica_context()
        self.replica_id = f"{context.replica_id.unique_id}.{os.getpid()}"
        self.header = (REPLICA_HEADER, self.replica_id.encode())
        self.model_app = spec.build_app(options)
        self.model_app.startup()
        failed = await self.model_app.wait_started()
        if failed is not None:
            raise ModelLoadError(f"the model failed to load: {failed!r}") from failed
        self.replica_asgi = _ReplicaAsgi(self.model_app, self.header)

    def __serve_build_asgi_app__(self) -> _ReplicaAsgi:
        return self.replica_asgi

    async def check_health(self) -> None:
        """Serve's health check: the app's own readiness route (loaded, ``is_healthy()``)."""
        status = await _asgi_status(self.model_app, "GET", READINESS_PATH)
        if status != 200:
            raise RuntimeError(f"the model is not healthy (readiness answered {status})")

    async def handle_request(self, head: RequestHead) -> AsyncIterator[Batch]:
        """Run one request through the app; yield its send messages in batches."""
        gone = asyncio.Event()
        body_given = False

        async def receive() -> Message:
            nonlocal body_given
            if not body_given:
                body_given = True
                return {"type": "http.request", "body": head.body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        run = self._run(head, receive, gone, "http.response.start")
        async with contextlib.aclosing(run) as batches:
            async for batch in batches:
                yield batch

    async def handle_request_whole(self, head: RequestHead) -> Batch:
        """The whole reply as one batch, for a caller that cannot stream (Ray Client)."""
        messages: Batch = []
        async for batch in self.handle_request(head):
            messages.extend(batch)
        return messages

    async def handle_websocket(
        self, head: RequestHead, inbox: Any, session: str
    ) -> AsyncIterator[Batch]:
        """Run one websocket through the app; yield its send messages in batches."""
        gone = asyncio.Event()
        waiting: list[Message] = [{"type": "websocket.connect"}]

        async def receive() -> Message:
            if not waiting:
                waiting.extend(await _first_of(inbox.take.remote(session), gone))
            return waiting.pop(0)

        run = self._run(head, receive, gone, "websocket.accept")
        async with contextlib.aclosing(run) as batches:
            async for batch in batches:
                yield batch

    async def _run(
        self,
        head: RequestHead,
        receive: Callable[[], Any],
        gone: asyncio.Event,
        first: str,
    ) -> AsyncGenerator[Batch, None]:
        """The app on one request: what it sends, in batches, with this replica's header on
        the ``first`` message (the response start, or the websocket accept). If the caller
        goes (cancelled, or the generator closed), ``gone`` is set, as uvicorn would tell
        the app, and the app's task is wound down."""
        outbox: Batch = []
        wake = asyncio.Event()
        header = self.header

        async def send(message: Message) -> None:
            if message["type"] == first:
                message = {**message, "headers": [*message.get("headers", ()), header]}
            outbox.append(message)
            wake.set()

        task = asyncio.ensure_future(self.model_app(head.scope(), receive, send))
        task.add_done_callback(lambda _: wake.set())
        try:
            while True:
                await wake.wait()
                wake.clear()
                if outbox:
                    batch = outbox[:]
                    outbox.clear()
                    yield batch
                elif task.done():
                    break
        except (asyncio.CancelledError, GeneratorExit):
            gone.set()
            await _wind_down(task)
            raise
        task.result()

    async def __del__(self) -> None:
        app = getattr(self, "model_app", None)
        if app is not None:
            await app.shutdown()


async def _asgi_status(app: Any, method: str, path: str) -> int:
    """Call ``app`` in process with an empty request; the status it answers."""
    head = RequestHead(method, path, path.encode(), b"", [], b"")
    status = 0
    given = False

    async def receive() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # never: the reply does not wait on the client
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(head.scope(), receive, send)
    return status


async def _first_of(taken: Any, gone: asyncio.Event) -> list[Message]:
    """The inbox's next messages, or a disconnect once the caller is gone."""
    messages = asyncio.ensure_future(taken)
    stop = asyncio.ensure_future(gone.wait())
    try:
        await asyncio.wait((messages, stop), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
    if messages.done():
        return list(messages.result())
    messages.cancel()
    return [dict(GONE)]


async def _wind_down(task: asyncio.Future[None]) -> None:
    try:
        await asyncio.wait_for(asyncio.shield(task), _WIND_DOWN_SECONDS)
    except BaseException:  # the app's own failure was logged by it; a timeout cancels it
        task.cancel()


def _pin_replica_grpc_to_loopback() -> None:
    """Keep a pinned cluster's replicas off the network.

    Serve (2.60) binds each replica's inter-deployment gRPC server on ``[::]:0``
    with no setting to change it. On a cluster Kingpost pinned to 127.0.0.1
    (which its replicas inherit the marker of) that port moves to loopback;
    elsewhere nothing changes. This module is loaded before the replica starts
    that server, so the patch is in place in time.
    """
    if os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") != "0":
        return
    from ray.serve._private import replica as serve_replica

    add_port = getattr(serve_replica, "add_port_to_grpc_server", None)
    if add_port is None or getattr(add_port, "kingpost_pinned", False):
        return

    def add_loopback_port(server: Any, address: str) -> Any:
        if address.startswith("[::]:"):
            address = "127.0.0.1:" + address.rsplit(":", 1)[1]
        return add_port(server, address)

    add_loopback_port.kingpost_pinned = True  # type: ignore[attr-defined]
    serve_replica.add_port_to_grpc_server = add_loopback_port


_pin_replica_grpc_to_loopback()
# The deployment every Kingpost application runs (Serve's decorators are loosely typed).
KingpostReplica: Any = serve.deployment(serve.ingress()(ReplicaBase))
