"""Loading what a server serves after it listens, and readiness.

``ModelLifecycle`` runs one blocking ``load()`` in a thread (for a Model class:
construct, ``setup_environment``, ``load``; for a custom server: wait for the
command to answer), then turns readiness on. A failed load calls ``on_fatal``
with an exit code (``kingpost.serve`` then stops the process), unless none was
given (``--watch`` reports it and keeps watching).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import traceback
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from kingpost.model.descriptor import ModelDescriptor
from kingpost.model.loader import ModelSource, construct_model
from kingpost.server.errors import user_exc_info
from kingpost.server.metrics import ServerMetrics
from kingpost.server.threads import HookThreads

logger = logging.getLogger("kingpost.server")

LOAD_FAILED_EXIT_CODE = 3


Load = Callable[[], Any]
Health = Callable[[Any], Awaitable[bool]]


class ModelLifecycle:
    """Owns the loaded object: ``load()`` in a thread, then readiness."""

    def __init__(
        self,
        load: Load,
        executor: Executor,
        metrics: ServerMetrics,
        on_fatal: Callable[[int], None] | None = None,
        health: Health | None = None,
    ) -> None:
        self.load = load
        self.executor = executor
        self.metrics = metrics
        self.on_fatal = on_fatal
        self.health = health
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

    async def wait_loaded(self) -> BaseException | None:
        """Wait for the load to end; the exception it failed with, or None."""
        if self._task is not None:
            await asyncio.shield(self._task)
        return self.failed

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def _load(self) -> None:
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        try:
            model = await loop.run_in_executor(self.executor, self.load)
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

    async def is_ready(self) -> bool:
        """Loaded and, if there is a health check, healthy."""
        if not self.loaded:
            return False
        if self.health is None:
            return True
        try:
            healthy = await self.health(self.model)
        except Exception as exc:
            logger.warning("is_healthy() raised %s: %s", type(exc).__name__, exc)
            return False
        return bool(healthy)


@dataclass(frozen=True)
class LoadRetries:
    """How often a failing ``load()`` is called again, and how long after (Truss: once, 1 s)."""

    retries: int = 1
    delay: float = 1.0

    def run(self, load: Callable[[], Any]) -> None:
        """Call ``load`` until it returns; its last exception once the retries are spent."""
        for attempt in range(self.retries + 1):
            try:
                load()
                return
            except Exception as exc:
                if attempt == self.retries:
                    raise
                logger.error(
                    "load() failed (attempt %d of %d): %s: %s; retrying load in %g s",
                    attempt + 1,
                    self.retries + 1,
                    type(exc).__name__,
                    exc,
                    self.delay,
                    exc_info=user_exc_info(exc),
                )
            time.sleep(self.delay)  # in the loading thread


TRUSS_LOAD_RETRIES = LoadRetries()


def model_loader(
    descriptor: ModelDescriptor, source: ModelSource, retries: LoadRetries = TRUSS_LOAD_RETRIES
) -> Load:
    """The ``load`` of a Model class: construct it, set up its environment, load it."""

    def load() -> Any:
        model = construct_model(descriptor, source)
        if descriptor.has_setup_environment:
            model.setup_environment(source.environment)
        if descriptor.has_load:
            retries.run(model.load)
        return model

    return load


def model_health(descriptor: ModelDescriptor) -> Health | None:
    """The model's ``is_healthy()`` as an async check, or None.

    A sync one runs in a thread of its own, never in the hook threads: readiness
    must not wait behind model work. Probes that arrive while a check runs share it.
    """
    if not descriptor.has_is_healthy:
        return None
    thread = HookThreads(1, name="kingpost-health")
    running: list[asyncio.Future[Any]] = []

    async def health(model: Any) -> bool:
        check = model.is_healthy
        if inspect.iscoroutinefunction(check):
            return bool(await check())
        if not running or running[0].done():
            running[:] = [asyncio.wrap_future(thread.submit(check))]
        return bool(await asyncio.shield(running[0]))

    return health
