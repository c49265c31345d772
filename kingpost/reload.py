"""``kingpost serve --watch``: reload the model when its directory changes.

The server keeps one ``ServerApp`` as the current generation and forwards every
request to it (``ReloadingApp`` wraps the core and is a ``Servable`` like it).
When a file under the model directory changes, a new generation is built
(config read, model module imported afresh) and loaded beside it; only once it
has loaded does it take new requests. The old one finishes what it was serving
and is then shut down. A broken edit (syntax error, failing ``load()``) is
reported and the old generation keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from starlette.websockets import WebSocket

from kingpost.errors import KingpostError, NotReadyError
from kingpost.model.loader import forget_modules
from kingpost.server.app import ServerApp
from kingpost.server.drain import Drain
from kingpost.server.exchange import Exchange, Receive, Scope, Send
from kingpost.server.probes import liveness
from kingpost.server.routing import ANY_METHOD, Route, Router, WebSocketRoute
from kingpost.server.websocket import CLOSE_TRY_AGAIN, refuse

logger = logging.getLogger("kingpost.reload")

DRAIN_TIMEOUT = 30.0


@dataclass(eq=False)
class _Generation:
    app: ServerApp
    active: int = 0
    idle: asyncio.Event | None = None

    def enter(self) -> None:
        self.active += 1

    def leave(self) -> None:
        self.active -= 1
        if self.active == 0 and self.idle is not None:
            self.idle.set()

    async def drained(self, timeout: float) -> None:
        if self.active == 0:
            return
        self.idle = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.idle.wait(), timeout)


class ReloadingApp:
    """ASGI app forwarding to the current model generation, swapping it on changes.

    ``build()`` makes a new (not yet started) ServerApp from the directory's
    current contents, sharing ``drain``; it raises KingpostError for a broken model.
    """

    def __init__(
        self,
        build: Callable[[], ServerApp],
        model_dir: Path,
        first: ServerApp | None,
        drain: Drain,
        error: str | None = None,
    ) -> None:
        self.build = build
        self.model_dir = model_dir.resolve()
        self.drain = drain
        self.current: _Generation | None = _Generation(first) if first is not None else None
        self.error = error if first is None else None
        self.unavailable = unavailable_app(self)
        self._stop: asyncio.Event | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._lock: asyncio.Lock | None = None
        self._first_load: asyncio.Task[bool] | None = None

    # -- ASGI ------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        generation = self.current
        if generation is None:
            await self.unavailable(scope, receive, send)
            return
        generation.enter()
        try:
            await generation.app(scope, receive, send)
        finally:
            generation.leave()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._stop = asyncio.Event()
                self._lock = asyncio.Lock()
                loop = asyncio.get_running_loop()
                if self.current is not None:
                    # Like a plain server: listen first, load in the background.
                    self._first_load = loop.create_task(self._start(self.current.app, first=True))
                watching = asyncio.Event()
                self._watcher = loop.create_task(self._watch(watching))
                # Serve only once changes are seen: an edit right after start must count.
                await watching.wait()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                assert self._stop is not None
                self._stop.set()
                if self._watcher is not None:
                    self._watcher.cancel()
                if self.current is not None:
                    await self.current.app.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- reloading ---------------------------------------------------------------

    async def _start(self, app: ServerApp, first: bool = False) -> bool:
        """Load ``app``'s model; True once it is ready to serve.

        A failed load is reported here, not fatal: ``build`` makes apps without
        an ``on_fatal``.
        """
        app.startup()
        failed = await app.wait_started()
        if failed is None:
            return True
        self.error = f"load() failed: {type(failed).__name__}: {failed}"
        if first:
            self.current = None
            logger.error("%s; watching for changes", self.error)
        await app.shutdown()
        return False

    async def reload(self, changed: Iterable[str] = ()) -> bool:
        """Build and load a new generation; swap it in if it loads. True on success."""
        assert self._lock is not None
        if self._first_load is not None:
            await self._first_load
        async with self._lock:
            started = time.perf_counter()
            names = sorted({os.path.relpath(path, self.model_dir) for path in changed})
            logger.info("change in %s: reloading", ", ".join(names) or self.model_dir)
            loop = asyncio.get_running_loop()
            try:
                app = await loop.run_in_executor(None, self._build_fresh)
            except KingpostError as exc:
                self.error = str(exc)
                logger.error("reload failed: %s%s", exc, self._keeping())
                return False
            except Exception as exc:  # anything else from building is a broken edit too
                self.error = f"{type(exc).__name__}: {exc}"
                logger.error("reload failed: %s%s", self.error, self._keeping())
                return False
            if not await self._start(app):
                logger.error("reload failed: %s%s", self.error, self._keeping())
                return False
            old, self.current = self.current, _Generation(app)
            self.error = None
            logger.info("reloaded in %.2f s", time.perf_counter() - started)
        if old is not None:
            await old.drained(DRAIN_TIMEOUT)
            await old.app.shutdown()
        return True

    def _keeping(self) -> str:
        return "; the previous version keeps serving" if self.current is not None else ""

    def _build_fresh(self) -> ServerApp:
        forget_modules_under(self.model_dir)
        return self.build()

    async def _watch(self, watching: asyncio.Event) -> None:
        from watchfiles import DefaultFilter, awatch

        assert self._stop is not None
        logging.getLogger("watchfiles").setLevel(logging.WARNING)  # we log each reload ourselves
        watch_filter = DefaultFilter()
        # awatch registers the OS watch before its first await, so by the time the
        # lifespan waiting on this event runs again, changes are being recorded.
        watching.set()
        try:
            async for changes in awatch(
                self.model_dir,
                watch_filter=watch_filter,
                stop_event=self._stop,
                debounce=400,
                step=30,
            ):
                await self.reload(path for _, path in changes)
        except Exception:  # the server goes on without reloading rather than dying
            logger.exception("watching %s stopped", self.model_dir)


def unavailable_app(reloading: ReloadingApp) -> ServerApp:
    """Serves while no generation has loaded: liveness answers, everything else is 503."""

    async def unavailable(ex: Exchange) -> None:
        raise NotReadyError(f"{reloading.error}; fix it and save: the server reloads on changes")

    async def refuse_websocket(ws: WebSocket) -> None:
        await refuse(ws, CLOSE_TRY_AGAIN, "model is not loaded")

    router = Router(
        [
            Route("/", liveness, ("GET", "HEAD"), name="liveness", logged=False),
            WebSocketRoute("/v1/websocket", refuse_websocket),
        ],
        fallback=Route("/", unavailable, ANY_METHOD, name="unavailable"),
    )
    return ServerApp(router, drain=reloading.drain)


def forget_modules_under(directory: Path) -> list[str]:
    """Drop modules imported from ``directory`` so the next import reads the files again.

    Their cached bytecode goes too: it is validated by modification time in whole
    seconds and size, so an edit within the same second could otherwise be missed.
    """
    forgotten = forget_modules(directory)
    for module in forgotten.values():
        file = getattr(module, "__file__", None)
        if file and file.endswith(".py"):
            with contextlib.suppress(OSError, ValueError):
                os.unlink(importlib.util.cache_from_source(file))
    return list(forgotten)
