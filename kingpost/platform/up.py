"""``kingpost up``: the platform's composition root, run on uvicorn.

It builds the state store, its keys, the replica factory, the platform, the
admin API and the app, listens (refusing a non-loopback address without any
key unless told ``--insecure-no-keys``), and then applies ``kingpost.yaml``
(when given) through its own admin API, exactly as ``kingpost apply`` would,
with a key that lives only in this process.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import sys
import threading
from collections.abc import Callable

import uvicorn
from sqlalchemy.engine import make_url

from kingpost.errors import RequestError
from kingpost.observe import tracing
from kingpost.observe.tracing import Tracing
from kingpost.platform.access import PlatformKeys
from kingpost.platform.admin import build_admin
from kingpost.platform.app import AsyncRoutes, PlatformApp
from kingpost.platform.controller import Platform
from kingpost.platform.edge import EdgeProtocol
from kingpost.platform.keystore import PlatformKeyStore
from kingpost.platform.process_replica import ProcessOptions, ProcessReplicaFactory
from kingpost.platform.relay import Limits
from kingpost.platform.replica import Backends, ReplicaFactory
from kingpost.platform.settings import PlatformOptions
from kingpost.platform.store import StateStore
from kingpost.server.uvicorn_server import CleanStopServer

logger = logging.getLogger("kingpost.platform")


# More replica backends than local processes, built by the composition root (the ``ray``
# one lives in kingpost.scale, which the platform does not import).
BackendPlugins = Callable[[PlatformOptions], dict[str, ReplicaFactory]]


def build_platform(
    options: PlatformOptions,
    factory: ReplicaFactory | None = None,
    async_routes: AsyncRoutes | None = None,
    backends: BackendPlugins | None = None,
) -> PlatformApp:
    """The ASGI app of a platform (the replica kinds and async inference are plug-ins)."""
    options.home.mkdir(parents=True, exist_ok=True)
    store = StateStore(options.database_url)
    if factory is None:
        process = ProcessOptions(
            limits=Limits(options.max_request_bytes, options.request_timeout),
            start_timeout=options.replica_start_timeout,
            python=options.python or ProcessOptions().python,
            extra_args=options.extra_replica_args,
        )
        factory = Backends(ProcessReplicaFactory(process), **(backends or _none)(options))
    platform = Platform(options, store, factory)
    keys = PlatformKeys(PlatformKeyStore(store), options.api_keys)
    admin = build_admin(platform, playground=options.playground, keys=keys.store)
    return PlatformApp(
        platform,
        admin,
        async_routes,
        tracing=configure_tracing(),
        keys=keys,
        key_quota=options.key_quota,
        model_quotas=options.model_quotas,
    )


def _none(options: PlatformOptions) -> dict[str, ReplicaFactory]:
    return {}


def configure_tracing() -> Tracing | None:
    """Tracing of the routing hop when the ``OTEL_*`` variables ask (replicas inherit them)."""
    return tracing.configure(service_name="kingpost-platform")


def async_plugin(options: PlatformOptions) -> AsyncRoutes | None:
    """Async inference on the platform's database, when the ``async`` extra is installed."""
    try:
        from kingpost.async_queue.platform_routes import PlatformAsync
    except ImportError as exc:
        logger.info("async inference is off (pip install 'kingpost[async]'): %s", exc)
        return None
    options.home.mkdir(parents=True, exist_ok=True)
    return PlatformAsync(options.database_url)


def run_platform(options: PlatformOptions, backends: BackendPlugins | None = None) -> int:
    try:
        app = build_platform(options, async_routes=async_plugin(options), backends=backends)
    except Exception as exc:  # the state store cannot be opened: say so, no traceback
        shown = make_url(options.database_url).render_as_string(hide_password=True)
        logger.error("cannot open the state store %s: %s", shown, str(exc).splitlines()[0])
        return 1
    refusal = open_bind_refusal(options, app.keys)
    if refusal is not None:
        print(f"kingpost: {refusal}", file=sys.stderr)
        app.platform.store.close()
        return 2
    try:
        app.platform.check_backend(options.backend)
    except RequestError as exc:
        logger.error("--backend: %s", exc)
        app.platform.store.close()
        return 2
    if options.file is not None:
        internal_key = app.keys.internal_key if app.keys is not None else None
        app.on_startup = lambda: _apply_when_listening(options, internal_key)
    config = uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        loop="uvloop",
        http=EdgeProtocol,  # httptools, one write per loop turn
        lifespan="on",
        access_log=False,
        log_config=None,
        log_level=options.log_level,
        server_header=False,
        proxy_headers=False,  # the platform is the edge: the client address is the peer's
        timeout_graceful_shutdown=int(options.replica_grace),
        ssl_certfile=options.ssl_certfile,
        ssl_keyfile=options.ssl_keyfile,
    )
    server = CleanStopServer(config)  # a SIGTERM ends in the store's close and exit 0
    # TCP_NODELAY on the listening socket, inherited by accepted ones: a reply's head
    # and body go out as two writes, and the second must not wait for a delayed ACK.
    try:
        sock = bind_socket(options.host, options.port)
    except OSError as exc:
        logger.error("cannot listen on %s:%d: %s", options.host, options.port, exc)
        return 1
    logger.info(
        "platform on %s://%s:%d (home %s, state %s%s)",
        options.scheme,
        options.host,
        options.port,
        options.home,
        "postgresql" if options.shared else "sqlite",
        ", API keys required" if app.keys is not None and app.keys.required() else "",
    )
    with asyncio.Runner(loop_factory=_new_event_loop) as runner:
        runner.run(server.serve(sockets=[sock]))
    app.platform.store.close()
    return 0


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to any interface


def open_bind_refusal(options: PlatformOptions, keys: PlatformKeys | None) -> str | None:
    """Why ``kingpost up`` will not listen on ``options.host``, or None."""
    if is_loopback(options.host) or options.insecure_no_keys:
        return None
    if keys is not None and keys.usable():
        return None
    return (
        f"refusing to listen on {options.host} without an API key: anyone who can reach it "
        f"could deploy and run code. Make one (kingpost keys --home {options.home} create "
        "--scope admin), give --api-key or $KINGPOST_API_KEYS, bind 127.0.0.1, or pass "
        "--insecure-no-keys"
    )


def bind_socket(host: str, port: int) -> socket.socket:
    """The listening socket, with TCP_NODELAY for the connections it accepts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    return sock


def _new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _apply_when_listening(options: PlatformOptions, api_key: str | None) -> None:
    from kingpost.platform.client import AdminClient
    from kingpost.platform.declarative import apply_file

    assert options.file is not None
    file = options.file

    def apply() -> None:
        address = f"{options.scheme}://{_connect_host(options.host)}:{options.port}"
        # Over TLS to itself: the certificate names the public host, not 127.0.0.1.
        client = AdminClient(address, api_key=api_key, verify=options.ssl_certfile is None)
        try:
            client.wait_until_up(60.0)
            for line in apply_file(client, file):
                logger.info("%s: %s", file, line)
        except Exception as exc:
            logger.error("applying %s failed: %s", file, exc)
        finally:
            client.close()

    threading.Thread(target=apply, name="kingpost-apply", daemon=True).start()


def _connect_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
