"""Queued async inference that loses nothing.

A durable queue (SQLite by default, PostgreSQL when shared), leased claims with
heartbeats, priorities, expiry, retries with back-off, kept outputs, and
webhooks signed the platform's way and the Standard Webhooks way.

    store    the queue table (SQLAlchemy Core) and every state change
    models   request body, status object, enums (pydantic)
    policy   error codes, what is retried, back-off
    invoke   the ``Invoke`` callable the worker runs requests with
    worker   claim -> invoke -> record; leases, expiry, retention; webhooks
    webhooks payload, URL guard, delivery
    signing  both signatures
    admission  sync traffic first
    routes   the HTTP handlers, server-independent
    app      the async routes and worker in front of one model's ASGI app

Needs the ``async`` extra (SQLAlchemy, psycopg).
"""

from kingpost.async_queue.invoke import AsgiInvoke, Invoke, InvokeFailure
from kingpost.async_queue.models import AsyncPredictBody, ErrorCode, Status, WebhookStatus
from kingpost.async_queue.signing import WebhookSigner
from kingpost.async_queue.store import AsyncStore
from kingpost.async_queue.worker import Admission, AsyncWorker, WorkerSettings

__all__ = [
    "Admission",
    "AsgiInvoke",
    "AsyncPredictBody",
    "AsyncStore",
    "AsyncWorker",
    "ErrorCode",
    "Invoke",
    "InvokeFailure",
    "Status",
    "WebhookSigner",
    "WebhookStatus",
    "WorkerSettings",
]
