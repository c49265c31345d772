"""The composition root: build the app for a model directory and run it.

``kingpost serve DIR`` lands here (``cli`` builds the ``ServeOptions``). This
module is the only one that knows every mode: a plain Model class or an engine
(``kingpost.server``), a custom server (``kingpost.proxy``), ``--watch``
(``kingpost.reload``), ``--workers`` (``kingpost.server.workers``). Nothing
below it imports it.

    options = ServeOptions(Path("examples/echo"), port=8080)
    app = build_app(options)      # a ServerApp, not started
    exit_code = serve(options)    # serve until stopped
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn

from kingpost.auth.guard import route_dialects
from kingpost.auth.settings import KeySettings
from kingpost.config import ModelConfig, load_config
from kingpost.connection import ConnectionLimits, guarded_protocol
from kingpost.errors import KingpostError
from kingpost.limits import BoundedSlots
from kingpost.model.cache import resolve_model_files
from kingpost.model.loader import ModelSource, describe_model
from kingpost.model.requirements import install_requirements, verify_requirements
from kingpost.model.secrets import DEFAULT_SECRETS_DIR
from kingpost.observe import tracing
from kingpost.observe.pages import PlaygroundConfig
from kingpost.server.app import Servable, ServerApp, ServerSettings
from kingpost.server.drain import Drain
from kingpost.server.errors import ErrorTable
from kingpost.server.lifecycle import TRUSS_LOAD_RETRIES, LoadRetries
from kingpost.server.metrics import ServerMetrics
from kingpost.server.model_routes import model_routes
from kingpost.server.model_service import ModelService
from kingpost.server.uvicorn_server import CleanStopServer

if TYPE_CHECKING:
    from kingpost.platform.replica import ReplicaFactory, ReplicaSpec
    from kingpost.platform.settings import PlatformOptions

if TYPE_CHECKING:
    from kingpost.async_queue.app import AsyncQueue

logger = logging.getLogger("kingpost")

EXIT_OK = 0
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
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
    install: bool = False  # install the declared requirements into this environment first
    watch: bool = False  # reload the model when files under model_dir change
    metrics_dir: Path | None = None  # --workers: where each worker leaves its metrics
    load_retries: LoadRetries = TRUSS_LOAD_RETRIES  # a failing load() is retried (Truss: once, 1 s)
    keys: KeySettings = field(default_factory=KeySettings)  # none: every route is open
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    keep_alive_timeout: float = 5.0  # an idle keep-alive connection is closed after this
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_certfile is not None else "http"

    def settings(self) -> ServerSettings:
        return ServerSettings(dev=self.dev, access_log=self.access_log)

    def bind_socket(self, reuse_port: bool = False) -> socket.socket:
        """A bound TCP socket on ``host:port`` for uvicorn to listen on.

        With ``reuse_port`` several processes bind the same port and the kernel
        spreads incoming connections across them.
        """
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        # Accepted connections inherit this. Without it a keep-alive client waits for a
        # delayed ACK (about 40 ms) between the header and body writes of each response.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((self.host, self.port))
        sock.set_inheritable(True)
        return sock


OnFatal = Callable[[int], None]


def build_app(
    options: ServeOptions,
    drain: Drain | None = None,
    on_fatal: OnFatal | None = None,
    config: ModelConfig | None = None,
) -> ServerApp:
    """Read config, check requirements and files, import the model class, build its app.

    ``on_fatal(code)`` is called if the model fails to load (None: it is only logged).
    """
    model_dir = options.model_dir.resolve()
    if config is None:
        config = load_config(model_dir)
    if options.install:
        install_requirements(model_dir, config)
    verify_requirements(model_dir, config)
    resolve_model_files(model_dir, config, options.secrets_dir)
    environment = {"name": options.environment} if options.environment else None
    source = ModelSource(model_dir, config, options.secrets_dir, environment)
    drain = drain or Drain()
    if config.docker_server is not None:
        return custom_server_app(source, options.settings(), drain, on_fatal)
    return model_app(
        source, options.settings(), drain, on_fatal, options.metrics_dir, options.load_retries
    )


def model_app(
    source: ModelSource,
    settings: ServerSettings,
    drain: Drain,
    on_fatal: OnFatal | None = None,
    metrics_dir: Path | None = None,
    load_retries: LoadRetries = TRUSS_LOAD_RETRIES,
) -> ServerApp:
    """The app of a Model class (a user's model.py or an engine)."""
    metrics = ServerMetrics()
    if metrics_dir is not None:
        metrics.share(metrics_dir)
    # Before the hooks are bound: a hook runner is wrapped in a span only when tracing is on.
    tracing.configure(
        source.config.runtime.enable_tracing_data,
        service_name=source.config.model_name or "kingpost",
    )
    service = ModelService(source, describe_model(source), metrics, drain, on_fatal, load_retries)
    playground = PlaygroundConfig() if settings.dev else None
    return ServerApp(
        model_routes(service, metrics, playground),
        service=service,
        drain=drain,
        metrics=metrics,
        errors=ErrorTable(source.model_dir, dev=settings.dev),
        settings=settings,
    )


def custom_server_app(
    source: ModelSource, settings: ServerSettings, drain: Drain, on_fatal: OnFatal | None = None
) -> ServerApp:
    """The app in front of a custom server (``docker_server:`` in config.yaml)."""
    from kingpost.proxy import CustomServer, custom_server_routes

    metrics = ServerMetrics()
    server = CustomServer(source, metrics, drain, on_fatal)
    return ServerApp(
        custom_server_routes(server, metrics),
        service=server,
        drain=drain,
        metrics=metrics,
        errors=ErrorTable(source.model_dir, dev=settings.dev),
        settings=settings,
    )


def serve(options: ServeOptions) -> int:
    """Serve until stopped; returns the process exit code."""
    if options.workers > 1:
        from kingpost.server.workers import serve_workers

        if _is_custom_server(options.model_dir):
            # Each worker would start its own copy of the command on the one server_port.
            logger.error("a custom server (docker_server:) is served by one worker, not several")
            return EXIT_BAD_MODEL
        # Holding the port (bound, never listening) fixes it when 0 was asked for and
        # fails here, once, if it is taken. Only listening sockets receive connections.
        reserved = options.bind_socket(reuse_port=True)
        # One /metrics scrape answers for every worker: each leaves its numbers here.
        metrics_dir = Path(tempfile.mkdtemp(prefix="kingpost-metrics-"))
        worker = replace(
            options, port=reserved.getsockname()[1], workers=1, metrics_dir=metrics_dir
        )
        try:
            return serve_workers(
                options.workers, lambda: serve_process(worker, is_worker=True), reserved
            )
        finally:
            reserved.close()
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return serve_process(options)


def platform_backends(options: PlatformOptions) -> dict[str, ReplicaFactory]:
    """The platform's replica backends beyond local processes: ``ray`` with the ray extra.

    Its replicas build their app with ``build_app``, as ``kingpost serve`` does.
    """
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        return {}
    from kingpost.scale.cluster import ClusterOptions
    from kingpost.scale.platform_replica import RayReplicaFactory

    def replica_options(spec: ReplicaSpec) -> ServeOptions:
        return ServeOptions(
            model_dir=spec.model_dir,
            environment=spec.environment,
            access_log=False,
            log_level=options.log_level,
        )

    # Serve's handles report load a few times per short window (Ray's default is 10 s).
    cluster = ClusterOptions(address=options.ray_address, metrics_interval=1.0)
    return {"ray": RayReplicaFactory(build_app, replica_options, cluster)}


def _is_custom_server(model_dir: Path) -> bool:
    try:
        return load_config(model_dir.resolve()).docker_server is not None
    except KingpostError:
        return False  # the worker reports a broken config.yaml


def serve_process(options: ServeOptions, is_worker: bool = False) -> int:
    """Serve in this process until stopped; returns the process exit code."""
    started = time.perf_counter()
    drain = Drain()
    stop: list[OnFatal] = []  # the server is made after the app; it hears of a failure here

    def on_fatal(code: int) -> None:
        for callback in stop:
            callback(code)

    model_app: ServerApp | None
    config: ModelConfig | None
    queue: AsyncQueue | None = None
    build_error = None
    served: Servable | None = None  # the app a request reaches, keys and tracing aside
    try:
        config = load_config(options.model_dir.resolve())
        if config.async_queue.enabled and config.docker_server is None:
            queue = async_queue(config, options.model_dir, drain, lambda: served)
        # With --watch a failed load is reported and watched, not fatal.
        model_app = build_app(options, drain, None if options.watch else on_fatal, config)
        add_routes(model_app, queue)
    except KingpostError as exc:
        report_build_error(exc)
        if not options.watch:
            return EXIT_BAD_MODEL
        model_app, config, build_error = None, None, str(exc)
    if config is not None:
        report_unused_config(config)
        if config.runtime.enable_debug_logs:
            logging.getLogger().setLevel(logging.DEBUG)  # as Truss: the model's debug lines too
    app: Servable
    if options.watch:
        from kingpost.reload import ReloadingApp

        app = ReloadingApp(
            lambda: add_routes(build_app(options, drain), queue),
            options.model_dir,
            model_app,
            drain,
            build_error,
        )
    else:
        assert model_app is not None
        app = model_app
    served = app  # the model's own app, whose router names a request's route
    if queue is not None:
        from kingpost.async_queue.app import QueueLifespan

        queue.attach(served)
        app = QueueLifespan(served, queue)
    if tracing.ACTIVE is not None:  # else the request path is the same code as without it
        from kingpost.observe.tracing import TracedApp

        app = TracedApp(app, tracing.ACTIVE, route_namer(served))
    # Keys are checked first, before the async queue or tracing see the request.
    name = (config.model_name if config is not None else None) or "model"
    dialects = route_dialects(model_app.router) if model_app is not None else None
    guarded = options.keys.guard(app, name, options.environment, dialect_of=dialects)
    server = _Server(
        uvicorn_config(options, guarded, config), drain, options.graceful_timeout, is_worker
    )
    stop.append(server.stop_with)
    sock = options.bind_socket(reuse_port=is_worker)
    logger.info(
        "%slistening on %s://%s:%d (model %s, set up in %.2f s%s)",
        f"worker {os.getpid()} " if is_worker else "",
        options.scheme,
        options.host,
        sock.getsockname()[1],
        options.model_dir,
        time.perf_counter() - started,
        ", API keys required" if options.keys.enabled else "",
    )
    if not options.keys.enabled and options.host not in _LOOPBACK:
        logger.warning(
            "no API keys on %s: every route is open to anyone who can reach it "
            "(--api-key, KINGPOST_API_KEYS or --keys-file)",
            options.host,
        )
    # Server.serve() does not install the loop named in the config; we choose it here.
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(server.serve(sockets=[sock]))
    return server.exit_code


def route_namer(app: Servable) -> Callable[[str], str]:
    """The route name of a path (``predict``, ``chat_completions``), for a request's span."""

    def name_of(path: str) -> str:
        current = getattr(app, "current", None)  # --watch: the generation serving now
        served = current.app if current is not None else app
        router = getattr(served, "router", None)
        route = router.resolve(path) if router is not None else None
        return route.name if route is not None else path

    return name_of


def async_queue(
    config: ModelConfig, model_dir: Path, drain: Drain, served: Callable[[], Servable | None]
) -> AsyncQueue | None:
    """Async inference (``/async_predict``, ``/async_request/...``) for the model's core.

    Its routes join the core's table (``add_routes``); its worker calls the served
    app's own ``/predict`` and yields to sync requests on the model's real slots.
    Off, with a line in the log, when the ``async`` extra is not installed.
    """
    try:
        from kingpost.async_queue.app import AsyncQueue
    except ImportError as exc:
        logger.info("async inference is off (pip install 'kingpost[async]'): %s", exc)
        return None

    def ready() -> bool:
        app = served()
        return app is not None and not drain.draining and _model_loaded(app)

    def slots() -> BoundedSlots | None:
        app = served()
        return _predict_slots(app) if app is not None else None

    return AsyncQueue.build(config, model_dir, ready, slots)


def add_routes(app: ServerApp, queue: AsyncQueue | None) -> ServerApp:
    """The queue's routes in the app's table, its gauges in the app's ``/metrics`` (each
    --watch generation gets them too)."""
    if queue is not None:
        for route in queue.routes():
            app.router.add(route)
        app.metrics.registry.register(queue.gauges())
    return app


def _served_core(app: Servable) -> Any:
    current = getattr(app, "current", None)  # --watch: the generation serving now
    return current.app if current is not None else app


def _predict_slots(app: Servable) -> BoundedSlots | None:
    """The predict slots of the model behind the app, once it has loaded."""
    service = getattr(_served_core(app), "service", None)
    hooks = getattr(service, "hooks", None) or {}
    runner = hooks.get("predict")
    slot = getattr(runner, "slot", None)
    return slot if isinstance(slot, BoundedSlots) else None


def _model_loaded(app: Servable) -> bool:
    """Whether the model behind the app (a ReloadingApp's current one) has loaded."""
    lifecycle = getattr(getattr(_served_core(app), "service", None), "lifecycle", None)
    return bool(lifecycle is not None and lifecycle.loaded)


def uvicorn_config(
    options: ServeOptions, app: Callable[..., Any], config: ModelConfig | None
) -> uvicorn.Config:
    transport = config.runtime.transport if config is not None else None
    pings: dict[str, Any] = {}
    if transport is not None and transport.ping_interval_seconds is not None:
        pings["ws_ping_interval"] = transport.ping_interval_seconds
    if transport is not None and transport.ping_timeout_seconds is not None:
        pings["ws_ping_timeout"] = transport.ping_timeout_seconds
    limits = options.limits
    if config is not None:  # a client that stops reading is cut after the streaming timeout
        limits = replace(limits, send_timeout=config.runtime.streaming_read_timeout)
    return uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        loop="uvloop",
        http=guarded_protocol(limits),
        lifespan="on",
        access_log=False,
        log_config=None,
        log_level=options.log_level,
        timeout_graceful_shutdown=int(options.graceful_timeout),
        timeout_keep_alive=options.keep_alive_timeout,  # type: ignore[arg-type]
        ssl_certfile=options.ssl_certfile,
        ssl_keyfile=options.ssl_keyfile,
        server_header=False,
        **pings,
    )


class _Server(CleanStopServer):
    """uvicorn's server with a drain phase before shutdown.

    On the first SIGTERM/SIGINT the app starts answering new requests with 503
    (so a load balancer sees it leave) while in-flight ones finish, bounded by
    the graceful timeout, which is applied once: uvicorn's own wait gets only
    what is left of it, then what still runs is answered 503. A second signal
    stops at once.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        drain: Drain,
        graceful_timeout: float,
        is_worker: bool = False,
    ) -> None:
        super().__init__(config)
        self.drain = drain
        self.graceful_timeout = graceful_timeout
        self.is_worker = is_worker
        self.exit_code = EXIT_OK
        self._draining_task: asyncio.Task[None] | None = None

    def stop_with(self, code: int) -> None:
        """Stop serving and exit with ``code`` (a model that failed to load)."""
        self.exit_code = code
        self.should_exit = True

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self.is_worker and sig == signal.SIGINT:
            return  # Ctrl-C reaches the whole process group; the supervisor sends SIGTERM
        if self.drain.draining:
            logger.info("second stop signal: exiting now")
            self.force_exit = True
            super().handle_exit(sig, frame)
            return
        if not self.started:
            super().handle_exit(sig, frame)
            return
        self.drain.start()
        logger.info("draining: finishing %d in-flight requests", self.drain.in_flight)
        loop = asyncio.get_event_loop()
        loop.call_soon_threadsafe(self._start_drain, sig, frame)

    def _start_drain(self, sig: int, frame: Any) -> None:
        self._draining_task = asyncio.get_running_loop().create_task(self._drain(sig, frame))

    async def _drain(self, sig: int, frame: Any) -> None:
        deadline = time.monotonic() + self.graceful_timeout
        await self.drain.wait(self.graceful_timeout)
        # The grace period is spent once: uvicorn waits only for what is left of it.
        self.config.timeout_graceful_shutdown = int(max(0.0, deadline - time.monotonic()))
        super().handle_exit(sig, frame)


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
