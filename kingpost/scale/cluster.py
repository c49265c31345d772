"""Connecting to Ray: a local cluster pinned to loopback, or an existing one.

A local cluster started here binds every component to 127.0.0.1: Ray picks the
node address from ``get_node_ip_address()``, which answers the loopback address
when ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, and Ray's gRPC servers (GCS,
raylet, object manager, workers) listen on loopback only when the node address
is 127.0.0.1. The dashboard is off unless asked for; Serve's own HTTP proxy is
off (Kingpost's front process answers HTTP).

Stopping goes through Ray: ``serve.shutdown()`` then ``ray.shutdown()``, which
stops the processes this driver started. Nothing here signals process groups.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kingpost.errors import KingpostError

logger = logging.getLogger("kingpost.scale")

LOOPBACK = "127.0.0.1"
# Read by Ray when it picks this node's address; see the module docstring.
_PIN_TO_LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
# Serve's throughput-optimised mode (gRPC from handles to replicas, router and user
# code on the callers' loops) measured 2-3x faster than its defaults with Kingpost's
# front (bench/ray_bench.py). Its direct ingress stays off: it opens replica HTTP
# ports outside loopback, and Kingpost's front already answers HTTP. setdefault:
# the environment can still choose otherwise.
_FAST_PATH = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0"}
_METRIC_PUSH_INTERVALS = (
    "RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S",
    "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S",
)


@dataclass(frozen=True)
class ClusterOptions:
    """Where Serve runs. ``address=None`` starts a local cluster on 127.0.0.1.

    ``address`` is anything ``ray.init`` takes: ``"auto"``, ``"10.0.0.5:6379"``,
    ``"ray://head:10001"``.
    """

    address: str | None = None
    dashboard: bool = False
    num_cpus: float | None = None  # local cluster only; None lets Ray count them
    temp_dir: Path | None = None  # local cluster only
    namespace: str = "kingpost"
    # Uploaded with this driver's job: replicas it deploys start in a copy of it (for
    # clusters whose nodes do not share this file system). Ray caps it near 500 MiB.
    working_dir: Path | None = None
    # Seconds between load reports to Serve's autoscaler (handles here; replicas too
    # on a local cluster, which inherits the setting). None keeps Ray's default.
    metrics_interval: float | None = None
    extra_init: dict[str, Any] = field(default_factory=dict)

    @property
    def local(self) -> bool:
        return self.address is None

    @property
    def client(self) -> bool:
        """Whether this driver connects through a Ray Client server (``ray://``)."""
        return bool(self.address and self.address.startswith("ray://"))


class RayCluster:
    """``with RayCluster(options) as cluster:`` is connected to Ray (and Serve) inside."""

    def __init__(self, options: ClusterOptions | None = None) -> None:
        self.options = options or ClusterOptions()
        self.connected = False

    def connect(self) -> RayCluster:
        options = self.options
        if not options.client:
            # Through Ray Client the handles' calls run on the cluster, not on this loop;
            # and with the fast path set here the client's server fails to start (2.60).
            for name, value in _FAST_PATH.items():
                os.environ.setdefault(name, value)
        if options.metrics_interval is not None:
            interval = str(options.metrics_interval)
            for name in _METRIC_PUSH_INTERVALS:
                os.environ.setdefault(name, interval)
        if options.local or _is_loopback_address(options.address):
            # Before Ray is imported: it reads these once, and its child processes inherit
            # them. Joining a cluster at 127.0.0.1 needs them too: otherwise Ray swaps the
            # loopback address for this machine's network address, where nothing listens.
            os.environ.update(_PIN_TO_LOOPBACK)
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        import ray

        pinned = options.local or _is_loopback_address(options.address)
        if pinned and ray._private.ray_constants.ENABLE_RAY_CLUSTER:
            raise RuntimeError(
                "Ray was imported before the local cluster was pinned to 127.0.0.1; "
                "set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 in the environment"
            )
        kwargs: dict[str, Any] = {
            "namespace": options.namespace,
            "log_to_driver": True,
            "configure_logging": False,
            **options.extra_init,
        }
        if options.local:
            kwargs["include_dashboard"] = options.dashboard
            kwargs["dashboard_host"] = LOOPBACK
            if options.num_cpus is not None:
                kwargs["num_cpus"] = options.num_cpus
            if options.temp_dir is not None:
                kwargs["_temp_dir"] = str(options.temp_dir)
        else:
            assert options.address is not None
            check_reachable(options.address)
            _use_token_if_present()
            kwargs["address"] = options.address
        if options.working_dir is not None:
            kwargs["runtime_env"] = {"working_dir": str(options.working_dir)}
        if options.client:
            _init_through_client(kwargs)
        else:
            ray.init(**kwargs)
        self.connected = True
        return self

    def start_serve(self, http_host: str | None = None, http_port: int = 8000) -> None:
        """Start (or join) Serve; its own HTTP proxy only when ``http_host`` is given."""
        from ray import serve

        if http_host is None:
            serve.start(proxy_location="Disabled", http_options={"host": LOOPBACK})
        else:
            serve.start(
                proxy_location="HeadOnly", http_options={"host": http_host, "port": http_port}
            )

    def close(self, shutdown_serve: bool | None = None) -> None:
        """Leave the cluster; a local one (and its Serve) is stopped.

        On an existing cluster only this driver disconnects: Serve and other
        applications keep running unless ``shutdown_serve`` says otherwise.
        """
        if not self.connected:
            return
        import ray
        from ray import serve

        if shutdown_serve if shutdown_serve is not None else self.options.local:
            try:
                serve.shutdown()
            except Exception:  # Ray may already be gone; ray.shutdown still cleans up
                logger.exception("serve.shutdown failed")
        ray.shutdown()
        self.connected = False

    def __enter__(self) -> RayCluster:
        return self.connect()

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# Ray Client's server starts one server process per connection, and (2.60) that start
# sometimes fails at once ("Starting Ray client server failed"); a new connection works.
_CLIENT_ATTEMPTS = 3


def _init_through_client(kwargs: dict[str, Any]) -> None:
    import ray

    for attempt in range(1, _CLIENT_ATTEMPTS + 1):
        try:
            ray.init(**kwargs)
            return
        except ConnectionAbortedError as exc:
            ray.shutdown()
            if attempt == _CLIENT_ATTEMPTS:
                raise
            logger.warning("Ray Client connection %d failed, trying again: %s", attempt, exc)
            time.sleep(1.0)


class ClusterUnreachableError(KingpostError):
    """``--ray-address`` names a host and port where nothing answers."""


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a ``HOST:PORT`` with nothing listening (Ray itself retries for minutes)."""
    host, port = _host_port(address)
    if host is None or port is None:
        return  # "auto", "ray://..." and the like: Ray resolves those itself
    try:
        with socket.create_connection((host, port), timeout):
            pass
    except OSError as exc:
        raise ClusterUnreachableError(f"no Ray cluster answers at {address}: {exc}") from None


def _host_port(address: str) -> tuple[str | None, int | None]:
    if "://" in address or ":" not in address:
        return None, None
    host, _, port = address.rpartition(":")
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        return None, None


def _use_token_if_present() -> None:
    """Authenticate to the cluster with this machine's Ray token, if there is one.

    A cluster started by ``ray.init()`` or ``ray start`` (2.5x+) requires a token;
    its CLI picks up ``~/.ray/auth_token`` (or ``RAY_AUTH_TOKEN``) on its own, a
    driver joining with ``ray.init(address=...)`` does not. ``RAY_AUTH_MODE`` set in
    the environment wins.
    """
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # a Ray without token authentication
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def _is_loopback_address(address: str | None) -> bool:
    host = _host_port(address)[0] if address else None
    if host is None and address and address.startswith("ray://"):
        host = address[len("ray://") :].rpartition(":")[0]
    return host in ("127.0.0.1", "localhost", "::1")
