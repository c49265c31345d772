"""Running a model server process: uvicorn, graceful shutdown, exit codes."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn

from kingpost.config import load_config
from kingpost.errors import KingpostError
from kingpost.model.loader import ModelSource, describe_model
from kingpost.model.secrets import DEFAULT_SECRETS_DIR
from kingpost.server.app import ModelApp, ServerSettings

logger = logging.getLogger("kingpost")

EXIT_OK = 0
EXIT_BAD_MODEL = 2


@dataclass
class ServeOptions:
    """Everything ``kingpost serve`` was asked for; the single source of truth."""

    model_dir: Path
    host: str = "127.0.0.1"
    port: int = 8080
    dev: bool = False
    access_log: bool = True
    environment: str | None = None
    secrets_dir: Path = DEFAULT_SECRETS_DIR
    graceful_timeout: float = 30.0
    log_level: str = "info"
    extra: dict[str, Any] = field(default_factory=dict)


class _Server(uvicorn.Server):
    """uvicorn's server with a drain phase before shutdown.

    On the first SIGTERM/SIGINT the app starts answering new requests with 503
    (so a load balancer sees it leave) while in-flight ones finish, bounded by
    the graceful timeout; then uvicorn shuts down. A second signal stops at once.
    """

    def __init__(self, config: uvicorn.Config, app: ModelApp, graceful_timeout: float) -> None:
        super().__init__(config)
        self.model_app = app
        self.graceful_timeout = graceful_timeout
        self._draining_task: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self.model_app.draining or not self.started:
            super().handle_exit(sig, frame)
            return
        self.model_app.draining = True
        logger.info("draining: finishing %d in-flight requests", self.model_app.in_flight)
        loop = asyncio.get_event_loop()
        loop.call_soon_threadsafe(self._start_drain, sig, frame)

    def _start_drain(self, sig: int, frame: Any) -> None:
        self._draining_task = asyncio.get_running_loop().create_task(self._drain(sig, frame))

    async def _drain(self, sig: int, frame: Any) -> None:
        deadline = time.monotonic() + self.graceful_timeout
        while self.model_app.in_flight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        super().handle_exit(sig, frame)

    async def _serve(self, sockets: list[socket.socket] | None = None) -> None:
        await super()._serve(sockets)
        # uvicorn re-raises the stop signal after a graceful shutdown; for us a
        # graceful stop is a clean exit (code 0), so forget the captured signals.
        captured = getattr(self, "_captured_signals", None)
        if isinstance(captured, list):
            captured.clear()


def build_app(options: ServeOptions) -> ModelApp:
    """Read config, import and inspect the model class, and build its ASGI app."""
    model_dir = options.model_dir.resolve()
    config = load_config(model_dir)
    environment = {"name": options.environment} if options.environment else None
    source = ModelSource(model_dir, config, options.secrets_dir, environment)
    descriptor = describe_model(source)
    return ModelApp(
        source, descriptor, ServerSettings(dev=options.dev, access_log=options.access_log)
    )


def serve(options: ServeOptions) -> int:
    """Serve until stopped; returns the process exit code."""
    started = time.perf_counter()
    try:
        app = build_app(options)
    except KingpostError as exc:
        logger.error("%s", exc)
        cause = exc.__cause__
        if cause is not None:
            import traceback

            logger.error("".join(traceback.format_exception(cause, limit=-6)).rstrip())
        return EXIT_BAD_MODEL

    config = uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_config=None,
        log_level=options.log_level,
        timeout_graceful_shutdown=int(options.graceful_timeout),
        server_header=False,
    )
    server = _Server(config, app, options.graceful_timeout)
    exit_code = EXIT_OK

    def on_fatal(code: int) -> None:
        nonlocal exit_code
        exit_code = code
        server.should_exit = True

    app.lifecycle.on_fatal = on_fatal
    sock = _bind(options.host, options.port)
    logger.info(
        "listening on http://%s:%d (model %s, set up in %.2f s)",
        options.host,
        sock.getsockname()[1],
        options.model_dir,
        time.perf_counter() - started,
    )
    asyncio.run(server.serve(sockets=[sock]))
    return exit_code


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock
