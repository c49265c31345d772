"""The async routes' handlers, independent of the server that mounts them.

Each takes what it needs (a body, a request id) and returns a ``Reply``, or
raises a ``kingpost.errors.RequestError`` that the server renders:

    POST   {target}/async_predict            submit          201 {"request_id"}
    GET    /async_request/{id}               status          200 status object
    DELETE /async_request/{id}               cancel          200 while QUEUED, else 400
    GET    /async_request/{id}/result        result          200 the output as the model gave it
    GET    {target}/async_queue_status       queue_status    200 counts
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from kingpost.async_queue.models import (
    AsyncPredictBody,
    AsyncRequestStatus,
    ErrorEntry,
    QueueStatus,
    Status,
    iso_time,
)
from kingpost.async_queue.store import AsyncStore, NewRequest, StoredRequest, new_request_id
from kingpost.async_queue.webhooks import check_webhook_url
from kingpost.errors import (
    AsyncRequestNotFoundError,
    ClientDisconnectedError,
    InvalidInputError,
    NotCancelableError,
    PayloadTooLargeError,
    ResultGoneError,
    ResultNotReadyError,
)


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes


@dataclass(frozen=True)
class QueueTarget:
    """Which queue the routes serve, and the ids they report."""

    queue: str
    model_id: str
    deployment_id: str


class AsyncRoutes:
    """Handlers for one queue; ``on_submit`` wakes the worker."""

    def __init__(
        self,
        store: AsyncStore,
        target: QueueTarget,
        max_body_bytes: int = 256 * 1024,
        allow_link_local_webhooks: bool = False,
        on_submit: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.target = target
        self.max_body_bytes = max_body_bytes
        self.allow_link_local = allow_link_local_webhooks
        self.on_submit = on_submit
        self.clock = clock

    def check_size(self, size: int) -> None:
        if size > self.max_body_bytes:
            raise PayloadTooLargeError(
                f"the async request body is {size} bytes; the limit is {self.max_body_bytes}"
                " (async_queue.max_body_bytes)"
            )

    async def read_body(self, scope: Any, receive: Any) -> bytes:
        """A submission's body, refused (413) as soon as it is known to be too large."""
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit():
                self.check_size(int(value))
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnectedError("client disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            self.check_size(size)
            parts.append(chunk)
            if not message.get("more_body", False):
                return b"".join(parts)

    async def submit(self, body: bytes) -> Reply:
        self.check_size(len(body))
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidInputError(f"the body is not valid JSON: {exc}") from None
        request = AsyncPredictBody.parse(data)
        if request.webhook_endpoint is not None:
            check_webhook_url(request.webhook_endpoint, self.allow_link_local)
        now = self.clock()
        retry = request.inference_retry_config
        request_id = new_request_id()
        target = self.target
        await self.store.add(
            NewRequest(
                id=request_id,
                queue=target.queue,
                model_id=target.model_id,
                deployment_id=target.deployment_id,
                priority=request.priority,
                webhook_endpoint=request.webhook_endpoint,
                model_input=orjson.dumps(request.model_input),
                created_at=now,
                expires_at=now + request.max_time_in_queue_seconds,
                max_attempts=retry.max_attempts,
                initial_delay_ms=retry.initial_delay_ms,
                max_delay_ms=retry.max_delay_ms,
            )
        )
        if self.on_submit is not None:
            self.on_submit()
        return Reply(201, orjson.dumps({"request_id": request_id}))

    async def _find(self, request_id: str, of_model: str | None = None) -> StoredRequest:
        """The stored request; with ``of_model``, only if it was made of that model (another
        model's request is not found: a key held to one model learns nothing of others)."""
        found = await self.store.run(self.store.get, request_id)
        if found is None or (of_model is not None and found.model_id != of_model):
            raise AsyncRequestNotFoundError(f"no async request {request_id!r} (or it was purged)")
        return found

    async def status(self, request_id: str, of_model: str | None = None) -> Reply:
        found = await self._find(request_id, of_model)
        status = AsyncRequestStatus(
            request_id=found.id,
            model_id=found.model_id,
            deployment_id=found.deployment_id,
            status=found.status,
            webhook_status=found.webhook_status,
            created_at=iso_time(found.created_at),
            status_at=iso_time(found.status_at),
            errors=[ErrorEntry(**error) for error in found.errors],
        )
        return Reply(200, status.__pydantic_serializer__.to_json(status))

    async def cancel(self, request_id: str, of_model: str | None = None) -> Reply:
        if of_model is not None:
            await self._find(request_id, of_model)
        before = await self.store.run(self.store.cancel, request_id, self.clock())
        if before is None:
            raise AsyncRequestNotFoundError(f"no async request {request_id!r} (or it was purged)")
        if before is not Status.QUEUED:
            raise NotCancelableError(
                f"async request {request_id} is {before.value}; only QUEUED requests can be"
                " canceled"
            )
        body = {"request_id": request_id, "canceled": True, "message": "the request was canceled"}
        return Reply(200, orjson.dumps(body))

    async def result(self, request_id: str, of_model: str | None = None) -> Reply:
        found = await self._find(request_id, of_model)
        if found.status in (Status.SUCCEEDED, Status.WEBHOOK_FAILED):
            if found.output is None:
                raise ResultGoneError(
                    f"async request {request_id} succeeded; its output was not kept"
                    " (async_queue.keep_outputs is false)"
                )
            return Reply(200, found.output)
        detail = "; ".join(f"{e['code']}: {e['message']}" for e in found.errors)
        raise ResultNotReadyError(
            f"async request {request_id} is {found.status.value}; it has no output"
            + (f" ({detail})" if detail else "")
        )

    async def queue_status(self) -> Reply:
        queued, in_progress = await self.store.run(self.store.counts, self.target.queue)
        status = QueueStatus(
            model_id=self.target.model_id,
            deployment_id=self.target.deployment_id,
            num_queued_requests=queued,
            num_in_progress_requests=in_progress,
        )
        return Reply(200, status.__pydantic_serializer__.to_json(status))
