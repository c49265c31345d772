"""Constructing and loading the model after the server listens, and readiness."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from kingpost.model.descriptor import ModelDescriptor
from kingpost.model.loader import ModelSource, construct_model
from kingpost.server.metrics import ServerMetrics

logger = logging.getLogger("kingpost.server")

LOAD_FAILED_EXIT_CODE = 3


class ModelLifecycle:
    """Owns the model instance: construct + load in a thread, then readiness.

    ``on_fatal(code)`` is called when loading fails; the runner then stops the
    server and exits with that code.
    """

    def __init__(
        self,
        source: ModelSource,
        descriptor: ModelDescriptor,
        executor: Executor,
        metrics: ServerMetrics,
        on_fatal: Callable[[int], None] | None = None,
    ) -> None:
        self.source = source
        self.descriptor = descriptor
        self.executor = executor
        self.metrics = metrics
        self.on_fatal = on_fatal
        self.model: Any = None
        self.loaded = False
        self.loaded_at: float | None = None
        self.failed: BaseException | None = None
        self._task: asyncio.Task[None] | None = None
        self._loaded_callbacks: list[Callable[[Any], None]] = []

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._load())

    def on_loaded(self, callback: Callable[[Any], None]) -> None:
        """Run ``callback(model)`` on the event loop right before readiness turns on."""
        self._loaded_callbacks.append(callback)

    async def wait_loaded(self) -> None:
        if self._task is not None:
            await asyncio.shield(self._task)

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def _load(self) -> None:
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        try:
            model = await loop.run_in_executor(self.executor, self._construct_and_load)
            for callback in self._loaded_callbacks:
                callback(model)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self.failed = exc
            frames = "".join(traceback.format_exception(exc, limit=-8)).rstrip()
            logger.error("model failed to load: %s: %s\n%s", type(exc).__name__, exc, frames)
            if self.on_fatal is not None:
                self.on_fatal(LOAD_FAILED_EXIT_CODE)
            return
        self.model = model
        self.loaded = True
        self.loaded_at = time.time()
        seconds = time.perf_counter() - started
        self.metrics.load_seconds.set(seconds)
        self.metrics.ready.set(1)
        logger.info("model ready (loaded in %.2f s)", seconds)

    def _construct_and_load(self) -> Any:
        environment = self.source.environment
        model = construct_model(self.descriptor, self.source)
        if self.descriptor.has_setup_environment:
            model.setup_environment(environment)
        if self.descriptor.has_load:
            model.load()
        return model

    async def is_ready(self) -> bool:
        """Loaded and, if the model defines ``is_healthy()``, healthy."""
        if not self.loaded:
            return False
        if not self.descriptor.has_is_healthy:
            return True
        check = self.model.is_healthy
        try:
            if inspect.iscoroutinefunction(check):
                healthy = await check()
            else:
                healthy = await asyncio.get_running_loop().run_in_executor(self.executor, check)
        except Exception as exc:
            logger.warning("is_healthy() raised %s: %s", type(exc).__name__, exc)
            return False
        return bool(healthy)
