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
    app      one model's queue: its routes in the core's table, its worker
    client   ``kingpost async submit|status|cancel|result``

Needs the ``async`` extra (SQLAlchemy, psycopg).

The platform runs the same parts per deployment: one ``AsyncStore`` on its shared
database, and for each deployment a queue name (``"{model_id}/{deployment_id}"``),
``AsyncRoutes`` under its URL grammar and an ``AsyncWorker`` whose ``Invoke`` sends
the request to a replica through its router (which parks it until a replica is
ready, waking a scaled-to-zero deployment). ``AsyncStore.counts(queue)`` is the
queued demand an autoscaler adds to its in-flight count.
"""

from __future__ import annotations

import importlib
from typing import Any

# Imported on first use, so that ``kingpost async ...`` (the client) needs no SQLAlchemy.
_EXPORTS = {
    "Admission": "worker",
    "AsgiInvoke": "invoke",
    "AsyncPredictBody": "models",
    "AsyncQueue": "app",
    "AsyncStore": "store",
    "AsyncWorker": "worker",
    "ErrorCode": "models",
    "Invoke": "invoke",
    "InvokeFailure": "invoke",
    "Status": "models",
    "WebhookSigner": "signing",
    "WebhookStatus": "models",
    "WorkerSettings": "worker",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'kingpost.async_queue' has no attribute {name!r}")
    return getattr(importlib.import_module(f"kingpost.async_queue.{module}"), name)
