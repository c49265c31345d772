"""Running a model server process: uvicorn, graceful shutdown, exit codes."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn

from kingpost.config import ModelConfig, load_config
from kingpost.errors import KingpostError
from kingpost.model.cache import resolve_model_files
from kingpost.model.loader import ModelSource, describe_model
from kingpost.model.requirements import install_requirements, verify_requirements
from kingpost.model.secrets import DEFAULT_SECRETS_DIR
from kingpost.server.app import ModelApp, ServerSettings

if TYPE_CHECKING:
    from kingpost.reload import ReloadingApp

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
    workers: int = 1
    install: bool = False  # pip install the declared requirements first
    watch: bool = False  # reload the model when files under model_dir change
    extra: dict[str, Any] = field(default_factory=dict)


class _Server(uvicorn.Server):
    """uvicorn's server with a drain phase before shutdown.

    On the first SIGTERM/SIGINT the app starts answering new requests with 503
    (so a load balancer sees it leave) while in-flight ones finish, bounded by
    the graceful timeout; then uvicorn shuts down. A second signal stops at once.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        app: ModelApp | ReloadingApp,
        graceful_timeout: float,
        is_worker: bool = False,
    ) -> None:
        super().__init__(config)
        self.model_app = app
        self.graceful_timeout = graceful_timeout
        self.is_worker = is_worker
        self._draining_task: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self.is_worker and sig == signal.SIGINT:
            return  # Ctrl-C reaches the whole process group; the supervisor sends SIGTERM
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


def build_app(options: ServeOptions, install: bool = False) -> ModelApp:
    """Read config, check requirements and files, import the model class, build its app."""
    model_dir = options.model_dir.resolve()
    config = load_config(model_dir)
    if install:
        install_requirements(model_dir, config)
    verify_requirements(model_dir, config)
    resolve_model_files(model_dir, config, options.secrets_dir)
    environment = {"name": options.environment} if options.environment else None
    source = ModelSource(model_dir, config, options.secrets_dir, environment)
    descriptor = describe_model(source)
    return ModelApp(
        source, descriptor, ServerSettings(dev=options.dev, access_log=options.access_log)
    )


def serve(options: ServeOptions) -> int:
    """Serve until stopped; returns the process exit code."""
    if options.workers > 1:
        from kingpost.server.workers import serve_workers

        return serve_workers(options, serve_worker)
    return serve_process(options)


def serve_worker(options: ServeOptions) -> int:
    """One of several worker processes sharing the port (SO_REUSEPORT)."""
    return serve_process(options, is_worker=True)


def serve_process(options: ServeOptions, is_worker: bool = False) -> int:
    """Serve in this process until stopped; returns the process exit code."""
    started = time.perf_counter()
    model_app: ModelApp | None
    build_error = None
    try:
        model_app = build_app(options, install=options.install)
    except KingpostError as exc:
        report_build_error(exc)
        if not options.watch:
            return EXIT_BAD_MODEL
        model_app, build_error = None, str(exc)
    else:
        report_unused_config(model_app.source.config)
        if model_app.source.config.runtime.enable_debug_logs:
            logging.getLogger().setLevel(logging.DEBUG)  # as Truss: the model's debug lines too
    app: ModelApp | ReloadingApp
    if options.watch:
        from kingpost.reload import ReloadingApp

        app = ReloadingApp(lambda: build_app(options), options.model_dir, model_app, build_error)
    else:
        assert model_app is not None
        app = model_app
    transport = model_app.source.config.runtime.transport if model_app else None
    pings: dict[str, Any] = {}
    if transport is not None and transport.ping_interval_seconds is not None:
        pings["ws_ping_interval"] = transport.ping_interval_seconds
    if transport is not None and transport.ping_timeout_seconds is not None:
        pings["ws_ping_timeout"] = transport.ping_timeout_seconds

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
        **pings,
    )
    server = _Server(config, app, options.graceful_timeout, is_worker)
    exit_code = EXIT_OK

    def on_fatal(code: int) -> None:
        nonlocal exit_code
        exit_code = code
        server.should_exit = True

    if isinstance(app, ModelApp):
        app.lifecycle.on_fatal = on_fatal
    sock = bind_socket(options.host, options.port, reuse_port=is_worker)
    logger.info(
        "%slistening on http://%s:%d (model %s, set up in %.2f s)",
        f"worker {os.getpid()} " if is_worker else "",
        options.host,
        sock.getsockname()[1],
        options.model_dir,
        time.perf_counter() - started,
    )
    # Server.serve() does not install the loop named in the config; we choose it here.
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(server.serve(sockets=[sock]))
    return exit_code


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed (it is part of uvicorn[standard]), else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def report_build_error(exc: KingpostError) -> None:
    logger.error("%s", exc)
    cause = exc.__cause__
    if cause is not None:
        import traceback

        logger.error("".join(traceback.format_exception(cause, limit=-6)).rstrip())


def report_unused_config(config: ModelConfig) -> None:
    """Say once which config.yaml fields a local server accepts but does not act on."""
    unused = config.unused_locally()
    if unused:
        logger.warning(
            "config.yaml: %s not used when serving locally (image build and hosting settings)",
            ", ".join(unused),
        )
    unknown = sorted(config.model_extra or {})
    if unknown:
        logger.info("config.yaml: unknown fields kept for the model: %s", ", ".join(unknown))


def bind_socket(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A bound TCP socket for uvicorn to listen on.

    With ``reuse_port`` several processes bind the same port and the kernel
    spreads incoming connections across them.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    # Accepted connections inherit this. Without it a keep-alive client waits for a
    # delayed ACK (about 40 ms) between the header and body writes of each response.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock
