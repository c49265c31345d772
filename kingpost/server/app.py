"""The ASGI application of one model.

Plain ASGI at the top (a dict lookup picks the route), Starlette objects only
where the model asks for them (a ``fastapi.Request`` argument, a returned
``Response``). The request path is: read body -> parse -> preprocess ->
predict (inside its concurrency slot) -> postprocess -> send.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from kingpost.errors import (
    ClientDisconnectedError,
    HookNotFoundError,
    InvalidInputError,
    NotReadyError,
    RequestTimeoutError,
)
from kingpost.logs import access_log, request_id_var
from kingpost.model.descriptor import ENDPOINT_HOOKS, ModelDescriptor
from kingpost.model.loader import ModelSource
from kingpost.model.schema import ModelSchema
from kingpost.server.errors import ErrorMapper, error_body
from kingpost.server.exchange import Exchange, Message, Receive, Scope, Send
from kingpost.server.invoke import HookRunner, StreamResult
from kingpost.server.lifecycle import ModelLifecycle
from kingpost.server.metrics import ServerMetrics
from kingpost.server.routing import Router
from kingpost.server.streaming import (
    END,
    STOPPED,
    ChunkChannel,
    ChunkProducer,
    StreamFailure,
    chunk_bytes,
)
from kingpost.server.threads import HookThreads

logger = logging.getLogger("kingpost.server")

JSON = b"application/json"
EVENT_STREAM = b"text/event-stream"
OCTET_STREAM = b"application/octet-stream"
METRICS_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
ENDPOINT_PATHS = {
    "chat_completions": "/v1/chat/completions",
    "completions": "/v1/completions",
    "embeddings": "/v1/embeddings",
    "messages": "/v1/messages",
    "responses": "/v1/responses",
}
# Health checks and scrapes come every few seconds and would drown the access log.
_UNLOGGED_ROUTES = frozenset({"liveness", "readiness", "metrics"})
_ORJSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


@dataclass(frozen=True)
class ServerSettings:
    """How the server behaves, independent of the model (from the CLI)."""

    dev: bool = False
    access_log: bool = True


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
    return orjson.dumps(value, default=_json_default, option=_ORJSON_OPTIONS)


class ModelWork:
    """``with app.model_work:`` counts a request in ``app.in_flight`` while it runs.

    The drain on SIGTERM waits for that count to reach zero. One instance serves
    every request (it holds no per-request state).
    """

    __slots__ = ("app",)

    def __init__(self, app: ModelApp) -> None:
        self.app = app

    def __enter__(self) -> None:
        self.app.in_flight += 1

    def __exit__(self, *exc_info: object) -> None:
        self.app.in_flight -= 1


class ModelApp:
    """ASGI app serving one model directory."""

    def __init__(
        self,
        source: ModelSource,
        descriptor: ModelDescriptor,
        settings: ServerSettings | None = None,
        on_fatal: Callable[[int], None] | None = None,
    ) -> None:
        self.source = source
        self.descriptor = descriptor
        self.settings = settings or ServerSettings()
        runtime = source.config.runtime
        self.runtime = runtime
        self.metrics = ServerMetrics()
        self.errors = ErrorMapper(source.model_dir, dev=self.settings.dev)
        # Sized from the configured limits, so no hidden pool cap sits below them.
        workers = max(64, 2 * runtime.predict_concurrency + (runtime.endpoint_concurrency or 0) + 8)
        self.executor = HookThreads(workers)
        self.lifecycle = ModelLifecycle(source, descriptor, self.executor, self.metrics, on_fatal)
        self.draining = False
        self.in_flight = 0  # requests doing model work; the drain waits for zero
        self.model_work = ModelWork(self)
        self.metrics.watch(lambda: self.in_flight, lambda: self.lifecycle.model)
        self.runners: dict[str, HookRunner] = {}
        self.pass_request = descriptor.takes_request_anywhere
        schema = ModelSchema.from_descriptor(descriptor)
        self.schema_body = orjson.dumps(schema.as_dict()) if schema is not None else None
        self.router = self._build_router()

    # -- ASGI ------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.handle_http(scope, receive, send)
        elif kind == "lifespan":
            await self.lifespan(receive, send)
        elif kind == "websocket":
            from kingpost.server.websocket import handle_websocket

            await handle_websocket(self, scope, receive, send)

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.startup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def startup(self) -> None:
        """Begin constructing and loading the model (off the event loop)."""
        self.lifecycle.start()
        self.lifecycle.on_loaded(self._bind_hooks)

    async def shutdown(self) -> None:
        self.draining = True
        await self.lifecycle.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def handle_http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        ex = Exchange(scope, receive, send)
        token = request_id_var.set(ex.request_id)
        path = scope["path"]
        route = self.router.resolve(path)
        route_name = route.name if route is not None else "unknown"
        try:
            if route is None:
                await ex.send_bytes(404, error_body(f"no route for {path}"), JSON)
            elif scope["method"] not in route.methods:
                await ex.send_bytes(
                    405,
                    error_body(f"method {scope['method']} is not allowed on {path}"),
                    JSON,
                    ((b"allow", route.allow_header),),
                )
            else:
                await route.handler(ex)
        except BaseException as exc:  # one place turns failures into replies
            await self._fail(ex, exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            ex.close()
            elapsed = time.perf_counter() - started
            self.metrics.observe(route_name, ex.status, elapsed)
            if self.settings.access_log and route_name not in _UNLOGGED_ROUTES:
                access_log().write(
                    scope["method"], path, ex.status, elapsed, route_name, ex.request_id
                )
            request_id_var.reset(token)

    async def _fail(self, ex: Exchange, exc: BaseException) -> None:
        if isinstance(exc, ClientDisconnectedError) or ex.disconnected:
            ex.status = 499
            return
        if isinstance(exc, TimeoutError):
            exc = RequestTimeoutError(
                f"the request ran past the timeout of {self.runtime.request_timeout:g} s"
            )
        if ex.status:  # the response had begun: nothing more can be said to the client
            logger.error("request failed after its response began: %r", exc)
            return
        if isinstance(exc, asyncio.CancelledError):
            ex.status = 499
            return
        reply = self.errors.reply(exc)
        try:
            await ex.send_bytes(reply.status, reply.body, JSON, reply.headers)
        except Exception:  # the client may be gone
            ex.status = reply.status

    # -- routes ------------------------------------------------------------------

    def _build_router(self) -> Router:
        router = Router()
        router.add("/", "liveness", ("GET", "HEAD"), self.handle_liveness)
        router.add("/v1/models/model", "readiness", ("GET", "HEAD"), self.handle_readiness)
        router.add("/v1/models/model/loaded", "loaded", ("GET", "HEAD"), self.handle_loaded)
        router.add("/v1/models/model/schema", "schema", ("GET",), self.handle_schema)
        router.add("/v1/models", "models", ("GET",), self.handle_models)
        router.add("/metrics", "metrics", ("GET",), self.handle_metrics)
        router.add("/predict", "predict", ("POST",), self.handle_predict)
        router.add("/v1/models/model:predict", "predict", ("POST",), self.handle_predict)
        # SageMaker's container contract: health on /ping, inference on /invocations.
        router.add("/ping", "readiness", ("GET",), self.handle_readiness)
        router.add("/invocations", "predict", ("POST",), self.handle_predict)
        for hook, path in ENDPOINT_PATHS.items():
            router.add(path, hook, ("POST",), self._endpoint_handler(hook))
        return router

    async def handle_liveness(self, ex: Exchange) -> None:
        await ex.send_bytes(200, b'{"status":"alive"}', JSON)

    async def handle_readiness(self, ex: Exchange) -> None:
        if self.draining:
            raise NotReadyError("the server is shutting down")
        if not await self.lifecycle.is_ready():
            raise NotReadyError("model is not ready")
        await ex.send_bytes(200, orjson.dumps({"name": "model", "ready": True}), JSON)

    async def handle_loaded(self, ex: Exchange) -> None:
        if not self.lifecycle.loaded:
            raise NotReadyError("model is not loaded yet")
        await ex.send_bytes(200, b'{"loaded":true}', JSON)

    async def handle_schema(self, ex: Exchange) -> None:
        if self.schema_body is None:
            raise HookNotFoundError("this model declares no pydantic input or output type")
        await ex.send_bytes(200, self.schema_body, JSON)

    async def handle_models(self, ex: Exchange) -> None:
        name = self.source.config.model_name or "model"
        created = int(self.lifecycle.loaded_at or time.time())
        body = {
            "object": "list",
            "data": [{"id": name, "object": "model", "created": created, "owned_by": "kingpost"}],
        }
        await ex.send_bytes(200, orjson.dumps(body), JSON)

    async def handle_metrics(self, ex: Exchange) -> None:
        await ex.send_bytes(200, self.metrics.render(), METRICS_TYPE)

    def _endpoint_handler(self, hook: str) -> Callable[[Exchange], Any]:
        async def handle_endpoint(ex: Exchange) -> None:
            await self.handle_endpoint(ex, hook)

        return handle_endpoint

    # -- invoking the model ------------------------------------------------------

    def _bind_hooks(self, model: Any) -> None:
        """Called once the model is constructed: bind each hook to its slot."""
        runtime = self.runtime
        predict_slot = asyncio.Semaphore(runtime.predict_concurrency)
        endpoint_slot = (
            asyncio.Semaphore(runtime.endpoint_concurrency)
            if runtime.endpoint_concurrency
            else None
        )
        hooks = self.descriptor.hooks
        for name, descriptor in hooks.items():
            slot: asyncio.Semaphore | None
            if name == "predict":
                slot = predict_slot
            elif name in ENDPOINT_HOOKS:
                slot = endpoint_slot
            else:
                slot = None
            # Watching the client during a sync hook pays off only if a later step
            # can still be skipped (it answers 499 instead of running).
            followed = name == "preprocess" or (name == "predict" and "postprocess" in hooks)
            self.runners[name] = HookRunner(
                descriptor, model, self.executor, slot, watch_client=followed
            )

    def _require_ready(self) -> None:
        if self.draining:
            raise NotReadyError("the server is shutting down")
        if not self.lifecycle.loaded:
            raise NotReadyError("model is not ready")

    def _make_request(self, ex: Exchange, body: bytes) -> Request:
        request = Request(ex.scope, ex.receive_after_body)
        request._body = body  # the body was read already; hand the model the same bytes
        request.state.watch_disconnect = ex.thread_event
        request.state.request_id = ex.request_id
        return request

    def _parse_inputs(self, ex: Exchange, body: bytes) -> Any:
        if ex.content_type.startswith(OCTET_STREAM):
            from kingpost.server.msgpack_codec import decode_msgpack

            return decode_msgpack(body)
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidInputError(f"request body is not valid JSON: {exc}") from None

    async def handle_predict(self, ex: Exchange) -> None:
        self._require_ready()
        with self.model_work:
            await self._predict(ex)

    async def _predict(self, ex: Exchange) -> None:
        runners = self.runners
        predict = runners.get("predict")
        if predict is None:
            raise HookNotFoundError("this model has no predict method")
        preprocess = runners.get("preprocess")
        postprocess = runners.get("postprocess")
        body = await ex.read_body(self.runtime.max_request_bytes)
        first = preprocess or predict
        inputs = self._parse_inputs(ex, body) if first.takes_inputs else None
        request = self._make_request(ex, body) if self.pass_request else None
        async with ex.within(self.runtime.request_timeout):
            if preprocess is not None:
                inputs = await preprocess(ex, inputs, request)
                if isinstance(inputs, StreamResult):
                    raise TypeError("preprocess must not return a generator")
            result = await predict(ex, inputs, request)
            if isinstance(result, StreamResult):
                if ex.accept == JSON:
                    await self._send_gathered(ex, result)
                    return
                producer, first_chunk = await self._open_stream(ex, result)
            elif postprocess is not None and not isinstance(result, Response):
                result = await postprocess(ex, result, request)
        if isinstance(result, StreamResult):
            await self._send_stream(ex, producer, first_chunk, OCTET_STREAM)
        else:
            await self._send_result(ex, result, ex.content_type.startswith(OCTET_STREAM))

    async def handle_endpoint(self, ex: Exchange, hook: str) -> None:
        self._require_ready()
        with self.model_work:
            await self._endpoint(ex, hook)

    async def _endpoint(self, ex: Exchange, hook: str) -> None:
        runner = self.runners.get(hook)
        if runner is None:
            raise HookNotFoundError(f"this model does not implement {hook}")
        body = await ex.read_body(self.runtime.max_request_bytes)
        inputs = self._parse_inputs(ex, body) if runner.takes_inputs else None
        request = self._make_request(ex, body) if runner.takes_request else None
        async with ex.within(self.runtime.request_timeout):
            result = await runner(ex, inputs, request)
            if isinstance(result, StreamResult):
                producer, first_chunk = await self._open_stream(ex, result)
        if isinstance(result, StreamResult):
            # /v1 streams are always event streams, whatever the client's Accept says.
            await self._send_stream(ex, producer, first_chunk, EVENT_STREAM)
        else:
            await self._send_result(ex, result, False)

    async def _send_result(self, ex: Exchange, result: Any, as_msgpack: bool) -> None:
        if isinstance(result, Response):
            await self._send_response(ex, result)
        elif as_msgpack:
            from kingpost.server.msgpack_codec import encode_msgpack

            await ex.send_bytes(200, encode_msgpack(result), OCTET_STREAM)
        else:
            await ex.send_bytes(200, dump_json(result), JSON)

    async def _send_response(self, ex: Exchange, response: Response) -> None:
        request_id = ex.request_id.encode()

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                ex.status = message["status"]
                message = {
                    **message,
                    "headers": [*message.get("headers", ()), (b"x-request-id", request_id)],
                }
            await ex.send(message)

        await response(ex.scope, ex.receive_after_body, send)

    # -- streams -----------------------------------------------------------------

    def _start_stream(self, ex: Exchange, result: StreamResult) -> ChunkProducer:
        channel = ChunkChannel(asyncio.get_running_loop())
        producer = ChunkProducer(result.source, channel, self.executor, result.on_done)

        def on_disconnect() -> None:
            producer.stop()
            channel.push(STOPPED)

        ex.on_disconnect(on_disconnect)
        ex.begin_wait()
        return producer

    async def _open_stream(self, ex: Exchange, result: StreamResult) -> tuple[ChunkProducer, Any]:
        """Start the stream and wait for its first item.

        Waiting before the response begins means a failure before any output is a
        proper error reply, not a cut-off stream.
        """
        producer = self._start_stream(ex, result)
        try:
            item = await producer.channel.pull(self.runtime.request_timeout)
        except BaseException:
            producer.stop()
            raise
        if isinstance(item, StreamFailure):
            raise item.exc
        if item is STOPPED:
            raise ClientDisconnectedError("client disconnected")
        return producer, item

    async def _send_stream(
        self, ex: Exchange, producer: ChunkProducer, first: Any, media_type: bytes
    ) -> None:
        ex.status = 200
        headers = [
            (b"content-type", media_type),
            (b"x-request-id", ex.request_id.encode()),
        ]
        if media_type == EVENT_STREAM:
            headers += [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
        send = ex.send
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        timeout = self.runtime.streaming_read_timeout
        pull = producer.channel.pull
        item = first
        try:
            while item is not END:
                if item is STOPPED:
                    return
                if isinstance(item, StreamFailure):
                    # Leave the response incomplete so the client sees a failure, not an end.
                    logger.error("the stream failed after it began", exc_info=item.exc)
                    ex.finished = True
                    return
                body = chunk_bytes(item)
                await send({"type": "http.response.body", "body": body, "more_body": True})
                try:
                    item = await pull(timeout)
                except TimeoutError:
                    logger.warning(
                        "no chunk for %g s (streaming_read_timeout): ending the stream", timeout
                    )
                    break
        finally:
            producer.stop()
        ex.finished = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _send_gathered(self, ex: Exchange, result: StreamResult) -> None:
        """``Accept: application/json`` on predict: collect the chunks into one JSON string."""
        producer = self._start_stream(ex, result)
        parts: list[bytes] = []
        while True:
            try:
                item = await producer.channel.pull(self.runtime.streaming_read_timeout)
            except BaseException:
                producer.stop()
                raise
            if item is END:
                break
            if item is STOPPED:
                raise ClientDisconnectedError("client disconnected")
            if isinstance(item, StreamFailure):
                raise item.exc
            parts.append(chunk_bytes(item))
        text = b"".join(parts).decode("utf-8", errors="replace")
        await ex.send_bytes(200, orjson.dumps(text), JSON)
