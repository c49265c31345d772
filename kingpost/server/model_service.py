"""A user's Model class as the service a server core runs.

It owns the threads sync model code runs in, the lifecycle that constructs and
loads the model, and, once it is loaded, each request hook bound to its
concurrency slot (``hooks``). Route handlers (``predict``, ``endpoints``) read
``hooks``; everything about how to call a hook was decided here, at load time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from kingpost.config import RuntimeConfig
from kingpost.errors import NotReadyError
from kingpost.limits import BoundedSlots
from kingpost.model.descriptor import ENDPOINT_HOOKS, ModelDescriptor
from kingpost.model.loader import ModelSource
from kingpost.observe import tracing
from kingpost.server.drain import Drain
from kingpost.server.invoke import HookRunner
from kingpost.server.lifecycle import (
    TRUSS_LOAD_RETRIES,
    LoadRetries,
    ModelLifecycle,
    model_health,
    model_loader,
)
from kingpost.server.metrics import ServerMetrics
from kingpost.server.threads import HookThreads

# Threads are started on demand and kept; this only bounds a runaway.
UNBOUNDED_ENDPOINT_THREADS = 1024


class ModelService:
    """Loads one Model class and binds its hooks (a ``kingpost.server.app.Service``)."""

    def __init__(
        self,
        source: ModelSource,
        descriptor: ModelDescriptor,
        metrics: ServerMetrics,
        drain: Drain,
        on_fatal: Callable[[int], None] | None = None,
        load_retries: LoadRetries = TRUSS_LOAD_RETRIES,
    ) -> None:
        self.source = source
        self.descriptor = descriptor
        self.runtime: RuntimeConfig = source.config.runtime
        self.drain = drain
        runtime = self.runtime
        # Sized from the configured limits, so no hidden pool cap sits below them; with
        # endpoint_concurrency unset the /v1 hooks are unbounded, and so is their need.
        endpoints = runtime.endpoint_concurrency or UNBOUNDED_ENDPOINT_THREADS
        workers = max(64, 2 * runtime.predict_concurrency + endpoints + 8)
        self.threads = HookThreads(workers)
        self.lifecycle = ModelLifecycle(
            model_loader(descriptor, source, load_retries),
            self.threads,
            metrics,
            on_fatal,
            health=model_health(descriptor),
        )
        self.lifecycle.on_loaded(self._bind_hooks)
        self.hooks: dict[str, HookRunner] = {}
        metrics.watch(lambda: drain.in_flight, lambda: self.lifecycle.model)

    def start(self) -> None:
        self.lifecycle.start()

    async def wait_started(self) -> BaseException | None:
        return await self.lifecycle.wait_loaded()

    async def stop(self) -> None:
        await self.lifecycle.stop()
        self.threads.shutdown(wait=False, cancel_futures=True)

    def check_ready(self) -> None:
        """NotReadyError (503) while draining or before the model has loaded."""
        self.drain.check()
        if not self.lifecycle.loaded:
            raise NotReadyError("model is not ready")

    def _bind_hooks(self, model: Any) -> None:
        """Called once the model is constructed: bind each hook to its slot."""
        runtime = self.runtime
        # Past runtime.max_queue waiting for a slot, a request gets 503 at once.
        predict_slot = BoundedSlots(runtime.predict_concurrency, runtime.max_queue)
        endpoint_slot = (
            BoundedSlots(runtime.endpoint_concurrency, runtime.max_queue)
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
            runner = HookRunner(descriptor, model, self.threads, slot, watch_client=followed)
            # A span per call only when tracing is on; otherwise the runner itself.
            self.hooks[name] = tracing.ACTIVE.traced_hook(runner) if tracing.ACTIVE else runner
