"""Routes about the server rather than the model's work: liveness, readiness,
load state, schema, the model list and metrics."""

from __future__ import annotations

import time

import orjson

from kingpost.errors import HookNotFoundError, NotReadyError
from kingpost.server.drain import Drain
from kingpost.server.exchange import Exchange
from kingpost.server.lifecycle import ModelLifecycle
from kingpost.server.metrics import ServerMetrics
from kingpost.server.replies import JSON, METRICS_TYPE

ALIVE = b'{"status":"alive"}'


async def liveness(ex: Exchange) -> None:
    await ex.send_bytes(200, ALIVE, JSON)


class Readiness:
    """200 once loaded and healthy; 503 while loading, unhealthy or draining."""

    def __init__(self, lifecycle: ModelLifecycle, drain: Drain) -> None:
        self.lifecycle = lifecycle
        self.drain = drain

    async def __call__(self, ex: Exchange) -> None:
        self.drain.check()
        if not await self.lifecycle.is_ready():
            raise NotReadyError("model is not ready")
        await ex.send_bytes(200, b'{"name":"model","ready":true}', JSON)


class Loaded:
    def __init__(self, lifecycle: ModelLifecycle) -> None:
        self.lifecycle = lifecycle

    async def __call__(self, ex: Exchange) -> None:
        if not self.lifecycle.loaded:
            raise NotReadyError("model is not loaded yet")
        await ex.send_bytes(200, b'{"loaded":true}', JSON)


class Schema:
    """The model's input and output schema (from pydantic annotations), rendered once."""

    def __init__(self, body: bytes | None) -> None:
        self.body = body

    async def __call__(self, ex: Exchange) -> None:
        if self.body is None:
            raise HookNotFoundError("this model declares no pydantic input or output type")
        await ex.send_bytes(200, self.body, JSON)


class ModelList:
    """OpenAI's ``GET /v1/models``: one entry naming the served model."""

    def __init__(self, name: str, lifecycle: ModelLifecycle) -> None:
        self.name = name
        self.lifecycle = lifecycle

    async def __call__(self, ex: Exchange) -> None:
        created = int(self.lifecycle.loaded_at or time.time())
        entry = {"id": self.name, "object": "model", "created": created, "owned_by": "kingpost"}
        await ex.send_bytes(200, orjson.dumps({"object": "list", "data": [entry]}), JSON)


class Metrics:
    def __init__(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics

    async def __call__(self, ex: Exchange) -> None:
        await ex.send_bytes(200, self.metrics.render(), METRICS_TYPE)
