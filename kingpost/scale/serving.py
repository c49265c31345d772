"""``kingpost serve DIR --ray``: a Serve application behind Kingpost's own front process.

The front is a uvicorn server on Kingpost's host and port (the same socket
options as ``kingpost serve``) whose app forwards to the replicas through a
deployment handle; ``bench/ray_bench.py`` measured it against Serve's own
HTTP proxy, which it beats by a wide margin on this kind of machine.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import uvicorn
import uvloop

from kingpost.config import ModelConfig, load_config
from kingpost.errors import KingpostError
from kingpost.scale.application import AppBuilder
from kingpost.scale.cluster import ClusterOptions, ClusterUnreachableError, RayCluster
from kingpost.scale.settings import Scaling

if TYPE_CHECKING:
    from kingpost.serve import ServeOptions

logger = logging.getLogger("kingpost.scale")

EXIT_OK = 0
EXIT_BAD_MODEL = 2
EXIT_DEPLOY_FAILED = 3
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@dataclass(frozen=True)
class RayServeOptions:
    """What ``--ray`` adds to ``kingpost serve``'s options."""

    cluster: ClusterOptions = field(default_factory=ClusterOptions)
    scaling: Scaling = field(default_factory=lambda: Scaling.fixed(1))
    app_name: str = "kingpost"
    log_format: str = "text"
    # "kingpost": Kingpost's front process routes through handles (the fast path);
    # "serve": Ray Serve's own HTTP proxy listens on the port instead.
    http: Literal["kingpost", "serve"] = "kingpost"


class _FrontServer(uvicorn.Server):
    """uvicorn's server that returns after a signal instead of re-raising it.

    The caller still has to stop Ray (``serve.shutdown`` / ``ray.shutdown``).
    """

    async def _serve(self, sockets: list[socket.socket] | None = None) -> None:
        await super()._serve(sockets)
        captured = getattr(self, "_captured_signals", None)
        if isinstance(captured, list):
            captured.clear()


def serve_on_ray(options: ServeOptions, ray_options: RayServeOptions, build_app: AppBuilder) -> int:
    """Deploy the model directory on Ray, answer HTTP until stopped; the exit code.

    ``build_app`` is the composition root's app builder, run inside each replica.
    """
    from kingpost.scale.application import deploy_model

    started = time.perf_counter()
    try:
        config = load_config(options.model_dir.resolve())
    except KingpostError as exc:
        logger.error("%s", exc)
        return EXIT_BAD_MODEL
    serve_proxy = ray_options.http == "serve"
    # Bound first: a busy port fails before a cluster is started for nothing.
    sock = None if serve_proxy else options.bind_socket()
    cluster = RayCluster(ray_options.cluster)
    application = None
    deploying = False
    previous_handlers = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    try:
        try:
            cluster.connect()
        except ClusterUnreachableError as exc:
            logger.error("%s", exc)
            return EXIT_BAD_MODEL
        # Ray's driver installs its own SIGTERM handler (it aborts); a stop signal
        # from here on unwinds to the clean-up below instead, during deploy too.
        for sig in STOP_SIGNALS:
            signal.signal(sig, _raise_stop)
        deploying = True
        if serve_proxy:
            # Serve's proxy needs a port number: port 0 picks one that is free now.
            options = replace(options, port=options.port or _free_port(options))
            cluster.start_serve(http_host=options.host, http_port=options.port)
        else:
            cluster.start_serve()
        try:
            application = deploy_model(
                options,
                build_app,
                name=ray_options.app_name,
                route_prefix="/" if serve_proxy else None,
                scaling=ray_options.scaling,
                ship=not ray_options.cluster.local,
                log_format=ray_options.log_format,
            )
            deploying = False
        except Exception as exc:  # Serve reports a replica that cannot start this way
            logger.error("the model could not be deployed on Ray: %s", exc)
            if not ray_options.cluster.local:
                _delete_application(ray_options.app_name)  # not left failing on a shared cluster
            return EXIT_DEPLOY_FAILED
        logger.info(
            "listening on http://%s:%d (model %s on Ray Serve, application %r, %s, "
            "ready in %.2f s)",
            options.host,
            options.port if sock is None else sock.getsockname()[1],
            options.model_dir,
            ray_options.app_name,
            "Serve's HTTP proxy" if serve_proxy else "Kingpost's front",
            time.perf_counter() - started,
        )
        if sock is None:
            _wait_for_stop_signal()
        else:
            _run_front(application.front(), sock, options, config, ray_options.cluster.local)
        return EXIT_OK
    except _StopRequested:
        logger.info("stopping")
        return EXIT_OK
    finally:
        if sock is not None:
            sock.close()
        if not ray_options.cluster.local and (application is not None or deploying):
            _delete_application(ray_options.app_name)  # leave a shared cluster as found
        cluster.close()
        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)


def _free_port(options: ServeOptions) -> int:
    with options.bind_socket() as sock:
        return int(sock.getsockname()[1])


def _delete_application(name: str) -> None:
    from ray import serve

    try:
        serve.delete(name)
    except Exception:
        logger.exception("could not delete the Serve application %r", name)


def _run_front(
    front: Any, sock: socket.socket, options: ServeOptions, model: ModelConfig, local: bool
) -> None:
    # Websocket pings as the model asks (``runtime.transport``), like ``kingpost serve``.
    transport = model.runtime.transport
    pings: dict[str, Any] = {}
    if transport is not None and transport.ping_interval_seconds is not None:
        pings["ws_ping_interval"] = transport.ping_interval_seconds
    if transport is not None and transport.ping_timeout_seconds is not None:
        pings["ws_ping_timeout"] = transport.ping_timeout_seconds
    config = uvicorn.Config(
        front,
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
    server = _FrontServer(config)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(server.serve(sockets=[sock]))
        if local:
            # Serve's router runs on this loop (throughput-optimised mode): stop Serve
            # while the loop still runs, else its handles cannot shut down.
            from ray import serve

            runner.run(serve.shutdown_async())


class _StopRequested(BaseException):
    """SIGTERM or SIGINT arrived outside uvicorn (which handles its own)."""


def _raise_stop(signum: int, frame: Any) -> None:
    raise _StopRequested(signum)


def _wait_for_stop_signal() -> None:
    """Block until SIGTERM or SIGINT (Serve's proxy does the serving meanwhile)."""
    while True:
        time.sleep(3600)
