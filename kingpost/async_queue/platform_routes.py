"""Async inference on the platform (``kingpost up``): its ``AsyncRoutes`` plug-in.

One store on the platform's database; per deployment a queue
(``"{model_id}/{deployment_id}"``), its route handlers and a worker whose
invoke hands the request to the deployment's replica pool. The pool parks the
request until a replica is ready, so queued work wakes a scaled-to-zero
deployment.

    app = build_platform(options, async_routes=PlatformAsync(options.database_url))
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import orjson

from kingpost.async_queue.invoke import AsgiInvoke
from kingpost.async_queue.metrics import QueueGauges
from kingpost.async_queue.routes import AsyncRoutes, QueueTarget, Reply
from kingpost.async_queue.signing import WebhookSigner, load_secrets
from kingpost.async_queue.store import AsyncStore
from kingpost.async_queue.webhooks import WebhookSender
from kingpost.async_queue.worker import AsyncWorker, WorkerSettings
from kingpost.config import AsyncQueueConfig
from kingpost.errors import NotFoundError, RequestError

if TYPE_CHECKING:
    from kingpost.platform.controller import Platform, Target

logger = logging.getLogger("kingpost.async")


class PlatformAsync:
    """``kingpost.platform.app.AsyncRoutes`` on this package's queue."""

    def __init__(self, database_url: str, config: AsyncQueueConfig | None = None) -> None:
        self.config = config = config or AsyncQueueConfig()
        self.store = AsyncStore(config.database_url or database_url)
        signer = WebhookSigner(load_secrets(config.webhook_secrets, config.webhook_secret_file))
        self.sender = WebhookSender(
            signer, config.webhook_timeout_seconds, config.allow_link_local_webhooks
        )
        self.queues: dict[str, AsyncRoutes] = {}
        self.workers: list[AsyncWorker] = []
        self._starting: list[asyncio.Future[None]] = []
        # Status, cancel and result name a request, not a deployment.
        self.lookup = AsyncRoutes(self.store, QueueTarget("", "", ""))
        self.platform: Platform | None = None  # set by start()

    async def start(self, platform: Platform) -> None:
        """Start the workers of the deployments with unfinished work (after a restart), and
        put the queues' gauges in the platform's ``/metrics``."""
        self.platform = platform
        platform.metrics.registry.register(QueueGauges(self.store, known=self._known))
        for queue in await self.store.run(self.store.unfinished_queues):
            _model_id, _, deployment_id = queue.rpartition("/")
            target = platform.deployment_target(deployment_id)
            if target is None:
                logger.warning("async queue %s: its deployment is gone or deactivated", queue)
                continue
            self.routes_for(target)
            logger.info("async queue %s: resumed its unfinished work", queue)

    async def stop(self, grace: float = 10.0) -> None:
        """Stop every worker: running requests have ``grace`` seconds to finish, the rest
        go back to their queue at once (not after their leases); then close the store."""
        await asyncio.gather(*self._starting, return_exceptions=True)
        try:
            await asyncio.gather(*(worker.stop(grace) for worker in self.workers))
            await self.sender.close()
        finally:
            self.store.close()

    def _known(self) -> list[tuple[str, str]]:
        return [
            (routes.target.model_id, routes.target.deployment_id) for routes in self.queues.values()
        ]

    def routes_for(self, target: Target) -> AsyncRoutes:
        """The queue of the target's deployment, with its worker started on first use."""
        model_id, deployment_id = target.model.id, target.deployment.id
        queue = f"{model_id}/{deployment_id}"
        routes = self.queues.get(queue)
        if routes is not None:
            return routes
        pool = target.pool

        async def on_replica(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await pool.handle(scope, receive, send, "/predict")

        config = self.config
        worker = AsyncWorker(
            self.store,
            AsgiInvoke(on_replica),
            self.sender,
            WorkerSettings.from_config(config, queue, 4),
        )
        self.workers.append(worker)
        self._starting.append(asyncio.ensure_future(worker.start()))
        routes = AsyncRoutes(
            self.store,
            QueueTarget(queue, model_id, deployment_id),
            max_body_bytes=config.max_body_bytes,
            allow_link_local_webhooks=config.allow_link_local_webhooks,
            on_submit=worker.wake,
        )
        self.queues[queue] = routes
        return routes

    async def submit(self, target: Target, scope: Any, receive: Any, send: Any) -> None:
        routes = self.routes_for(target)
        await _answer(send, routes.submit(await routes.read_body(scope, receive)))

    async def queue_status(self, target: Target, scope: Any, receive: Any, send: Any) -> None:
        await _answer(send, self.routes_for(target).queue_status())

    async def request(
        self, model: str | None, request_id: str, scope: Any, receive: Any, send: Any
    ) -> None:
        await _answer(send, self._request(model, request_id, scope))

    async def _request(self, model: str | None, request_id: str, scope: Any) -> Reply:
        # Under /models/{model}/, only that model's requests are found.
        of_model = self._model_id(model) if model is not None else None
        if scope["method"] == "DELETE":
            return await self.lookup.cancel(request_id, of_model)
        if scope["path"].rstrip("/").endswith("/result"):
            return await self.lookup.result(request_id, of_model)
        return await self.lookup.status(request_id, of_model)

    def _model_id(self, key: str) -> str:
        """The id of the model a URL names (by name or id); 404 for an unknown one."""
        if self.platform is None:
            raise NotFoundError(f"no model {key!r}")
        return self.platform.model(key).id


async def _answer(send: Any, pending: Any) -> None:
    try:
        reply: Reply = await pending
    except RequestError as exc:
        reply = Reply(exc.status_code, orjson.dumps({"error": exc.message}))
    except Exception:
        logger.exception("async route failed")
        reply = Reply(500, b'{"error":"Internal Server Error"}')
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body, "more_body": False})
