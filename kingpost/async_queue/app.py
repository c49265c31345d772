"""Async inference in front of one model's ASGI app.

``AsyncQueueApp`` answers the async routes (bare and under the platform's
``/environments/{env}/``, ``/production/`` ... prefixes), passes everything else
to the model's app, and runs the worker from the app's lifespan. The worker
calls the model's own ``/predict`` in process (``AsgiInvoke``), so async work
goes through the same request path as sync work.

    app = AsyncQueueApp.build(model_app, config, Path("my-model"), ready=lambda: loaded)
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from kingpost.async_queue.admission import SyncFirst
from kingpost.async_queue.invoke import AsgiInvoke
from kingpost.async_queue.routes import AsyncRoutes, QueueTarget, Reply
from kingpost.async_queue.signing import WebhookSigner, load_secrets
from kingpost.async_queue.store import AsyncStore, default_database_url
from kingpost.async_queue.webhooks import WebhookSender
from kingpost.async_queue.worker import AsyncWorker, WorkerSettings
from kingpost.config import ModelConfig
from kingpost.errors import RequestError

logger = logging.getLogger("kingpost.async")

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
DATABASE_ENV = "KINGPOST_ASYNC_DATABASE_URL"
_TARGET = r"(?:/(?:environments/[^/]+|production|development|deployment/[^/]+))?"
QUEUE_PATH = re.compile(rf"^{_TARGET}/(?P<endpoint>async_predict|async_queue_status)/?$")
REQUEST_PATH = re.compile(r"^/async_request/(?P<id>[^/]+)(?P<result>/result)?/?$")
# Requests that never hold a model slot are not sync traffic.
_NOT_MODEL_WORK = frozenset({"GET", "HEAD", "OPTIONS"})


class AsyncQueueApp:
    """ASGI: the async routes, the model app for the rest, the worker in the lifespan."""

    def __init__(
        self,
        inner: ASGIApp,
        routes: AsyncRoutes,
        worker: AsyncWorker,
        admission: SyncFirst,
        store: AsyncStore,
    ) -> None:
        self.inner = inner
        # What the serve process reads of the app it runs (the SIGTERM drain).
        self.drain: Any = getattr(inner, "drain", None)
        self.routes = routes
        self.worker = worker
        self.admission = admission
        self.store = store

    @classmethod
    def build(
        cls,
        inner: ASGIApp,
        config: ModelConfig,
        model_dir: Path,
        ready: Callable[[], bool],
    ) -> AsyncQueueApp:
        """Async inference in front of ``inner``, as ``config.async_queue`` says.

        ``ready`` tells whether the model takes requests now (loaded, not draining):
        until it does, the worker claims nothing, so waiting spends no retries.
        """
        settings = config.async_queue
        model_id = settings.model_id or config.model_name or model_dir.resolve().name
        url = settings.database_url or os.environ.get(DATABASE_ENV)
        store = AsyncStore(url or default_database_url(model_id, model_dir))
        slots = config.runtime.predict_concurrency
        admission = SyncFirst(slots, ready=ready)
        signer = WebhookSigner(load_secrets(settings.webhook_secrets, settings.webhook_secret_file))
        sender = WebhookSender(
            signer, settings.webhook_timeout_seconds, settings.allow_link_local_webhooks
        )
        queue = f"{model_id}/{settings.deployment_id}"
        worker = AsyncWorker(
            store,
            AsgiInvoke(inner),
            sender,
            WorkerSettings.from_config(settings, queue, slots),
            admission,
        )
        routes = AsyncRoutes(
            store,
            QueueTarget(queue, model_id, settings.deployment_id),
            max_body_bytes=settings.max_body_bytes,
            allow_link_local_webhooks=settings.allow_link_local_webhooks,
            on_submit=worker.wake,
        )
        return cls(inner, routes, worker, admission, store)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if kind == "http":
            path = scope["path"]
            if "/async_" in path:  # a cheap test before the patterns
                handled = await self._route(scope, receive, send, path)
                if handled:
                    return
            if scope["method"] not in _NOT_MODEL_WORK:
                self.admission.enter()
                try:
                    await self.inner(scope, receive, send)
                finally:
                    self.admission.leave()
                return
        await self.inner(scope, receive, send)

    async def _route(self, scope: dict[str, Any], receive: Any, send: Any, path: str) -> bool:
        method = scope["method"]
        routes = self.routes
        match = QUEUE_PATH.match(path)
        try:
            if match is not None:
                if match["endpoint"] == "async_predict":
                    _allow(method, "POST")
                    reply = await routes.submit(await routes.read_body(scope, receive))
                else:
                    _allow(method, "GET")
                    reply = await routes.queue_status()
            else:
                request = REQUEST_PATH.match(path)
                if request is None:
                    return False
                if request["result"]:
                    _allow(method, "GET")
                    reply = await routes.result(request["id"])
                elif method == "DELETE":
                    reply = await routes.cancel(request["id"])
                else:
                    _allow(method, "GET", "DELETE")
                    reply = await routes.status(request["id"])
        except RequestError as exc:
            reply = Reply(exc.status_code, orjson.dumps({"error": exc.message}))
        except Exception:
            logger.exception("async route %s failed", path)
            reply = Reply(500, b'{"error":"Internal Server Error"}')
        await _send(send, reply)
        return True

    async def _lifespan(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        worker = self.worker

        async def wrapped_receive() -> Any:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await worker.stop()
                await worker.sender.close()
            return message

        async def wrapped_send(message: Any) -> None:
            if message["type"] == "lifespan.startup.complete":
                await worker.start()
            await send(message)

        try:
            await self.inner(scope, wrapped_receive, wrapped_send)
        finally:
            self.store.close()


class _MethodNotAllowed(RequestError):
    status_code = 405


def _allow(method: str, *allowed: str) -> None:
    if method not in allowed:
        raise _MethodNotAllowed(f"method {method} is not allowed here (use {', '.join(allowed)})")


async def _send(send: Any, reply: Reply) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": reply.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(reply.body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": reply.body, "more_body": False})
