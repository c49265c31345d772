"""Async inference for one model served by the core: its routes, its worker.

``AsyncQueue`` gives the core ordinary ``Route`` entries (bare and, through the
router's platform grammar, under ``/environments/{env}/``, ``/production/`` ...),
so they get the core's request ids, error table, metrics and access log. Its
worker calls the served app's own ``/predict`` in process (``AsgiInvoke``), so
async work goes through the same request path and slots as sync work, and
yields to sync requests on those slots (``SyncFirst``). ``QueueLifespan`` starts
the worker with the app and stops it at shutdown.

    queue = AsyncQueue.build(config, Path("my-model"), ready=lambda: loaded, slots=slots)
    router.add(*queue.routes())            # each generation's router, with --watch
    app = QueueLifespan(served_app, queue)  # queue.attach(served_app) first
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from kingpost.async_queue.admission import SyncFirst
from kingpost.async_queue.invoke import AsgiInvoke
from kingpost.async_queue.metrics import QueueGauges
from kingpost.async_queue.routes import AsyncRoutes, QueueTarget, Reply
from kingpost.async_queue.signing import WebhookSigner, load_secrets
from kingpost.async_queue.store import AsyncStore, default_database_url
from kingpost.async_queue.webhooks import WebhookSender
from kingpost.async_queue.worker import AsyncWorker, WorkerSettings
from kingpost.config import ModelConfig
from kingpost.errors import MethodNotAllowedError, PayloadTooLargeError, RouteNotFoundError
from kingpost.limits import BoundedSlots
from kingpost.server.exchange import Exchange
from kingpost.server.replies import BytesReply
from kingpost.server.routing import Route

logger = logging.getLogger("kingpost.async")

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
DATABASE_ENV = "KINGPOST_ASYNC_DATABASE_URL"
REQUEST_PATH = re.compile(r"^/async_request/(?P<id>[^/]+)(?P<result>/result)?/?$")


class AsyncQueue:
    """One model's queue: store, route handlers, worker."""

    def __init__(
        self,
        store: AsyncStore,
        handlers: AsyncRoutes,
        sender: WebhookSender,
        settings: WorkerSettings,
        admission: SyncFirst,
    ) -> None:
        self.store = store
        self.handlers = handlers
        self.admission = admission
        self._app: ASGIApp | None = None
        self.worker = AsyncWorker(store, AsgiInvoke(self._predict), sender, settings, admission)
        handlers.on_submit = self.worker.wake

    @classmethod
    def build(
        cls,
        config: ModelConfig,
        model_dir: Path,
        ready: Callable[[], bool],
        slots: Callable[[], BoundedSlots | None],
    ) -> AsyncQueue:
        """The queue ``config.async_queue`` describes.

        ``ready`` tells whether the model takes requests now (loaded, not draining):
        until it does, the worker claims nothing, so waiting spends no retries.
        ``slots`` returns the model's predict slots (None until it has loaded).
        """
        settings = config.async_queue
        model_id = settings.model_id or config.model_name or model_dir.resolve().name
        url = settings.database_url or os.environ.get(DATABASE_ENV)
        store = AsyncStore(url or default_database_url(model_id, model_dir))
        signer = WebhookSigner(load_secrets(settings.webhook_secrets, settings.webhook_secret_file))
        sender = WebhookSender(
            signer, settings.webhook_timeout_seconds, settings.allow_link_local_webhooks
        )
        queue = f"{model_id}/{settings.deployment_id}"
        handlers = AsyncRoutes(
            store,
            QueueTarget(queue, model_id, settings.deployment_id),
            max_body_bytes=settings.max_body_bytes,
            allow_link_local_webhooks=settings.allow_link_local_webhooks,
        )
        worker_settings = WorkerSettings.from_config(
            settings, queue, config.runtime.predict_concurrency
        )
        return cls(store, handlers, sender, worker_settings, SyncFirst(slots, ready=ready))

    def attach(self, app: ASGIApp) -> None:
        """The app whose ``/predict`` the worker calls (the served app, keys aside)."""
        self._app = app

    async def _predict(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert self._app is not None, "AsyncQueue.attach(app) before the worker starts"
        await self._app(scope, receive, send)

    def gauges(self) -> QueueGauges:
        """Its ``/metrics`` gauges, for the registry of the app that serves its routes."""
        target = self.handlers.target
        return QueueGauges(
            self.store, target.queue, known=lambda: [(target.model_id, target.deployment_id)]
        )

    def routes(self) -> list[Route]:
        return [
            Route("/async_predict", self.submit, ("POST",), name="async_predict"),
            Route("/async_queue_status", self.queue_status, ("GET",), name="async_queue_status"),
            Route(
                "/async_request",
                self.request,
                ("GET", "DELETE"),
                name="async_request",
                prefix=True,
            ),
        ]

    # -- endpoints ----------------------------------------------------------------

    async def submit(self, ex: Exchange) -> None:
        handlers = self.handlers
        handlers.check_size(ex.content_length)
        try:
            body = await ex.read_body(handlers.max_body_bytes)
        except PayloadTooLargeError:
            handlers.check_size(handlers.max_body_bytes + 1)  # the message naming the setting
            raise
        await _send(ex, await handlers.submit(body))

    async def queue_status(self, ex: Exchange) -> None:
        await _send(ex, await self.handlers.queue_status())

    async def request(self, ex: Exchange) -> None:
        path = ex.scope["path"]
        match = REQUEST_PATH.match(path)
        if match is None:
            raise RouteNotFoundError(f"no route for {path}")
        method = ex.scope["method"]
        if match["result"]:
            if method != "GET":
                raise MethodNotAllowedError(f"method {method} is not allowed on {path}", "GET")
            reply = await self.handlers.result(match["id"])
        elif method == "DELETE":
            reply = await self.handlers.cancel(match["id"])
        else:
            reply = await self.handlers.status(match["id"])
        await _send(ex, reply)

    # -- lifetime -----------------------------------------------------------------

    async def start(self) -> None:
        await self.worker.start()

    async def stop(self) -> None:
        try:
            await self.worker.stop()
            await self.worker.sender.close()
        finally:
            self.store.close()


def _send(ex: Exchange, reply: Reply) -> Awaitable[None]:
    return BytesReply(reply.body, status=reply.status).send(ex)


class QueueLifespan:
    """The served app, with the queue's worker started and stopped by its lifespan."""

    def __init__(self, app: Any, queue: AsyncQueue) -> None:
        self.app = app
        self.queue = queue
        # What the serve process reads of the app it runs (the SIGTERM drain).
        self.drain: Any = getattr(app, "drain", None)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        queue = self.queue

        async def wrapped_receive() -> Any:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await queue.stop()
            return message

        async def wrapped_send(message: Any) -> None:
            if message["type"] == "lifespan.startup.complete":
                await queue.start()
            await send(message)

        await self.app(scope, wrapped_receive, wrapped_send)
