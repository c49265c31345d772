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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger("kingpost.scale")

LOOPBACK = "127.0.0.1"
# Read by Ray when it picks this node's address; see the module docstring.
_PIN_TO_LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


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
    extra_init: dict[str, Any] = field(default_factory=dict)

    @property
    def local(self) -> bool:
        return self.address is None


class RayCluster:
    """``with RayCluster(options) as cluster:`` is connected to Ray (and Serve) inside."""

    def __init__(self, options: ClusterOptions | None = None) -> None:
        self.options = options or ClusterOptions()
        self.connected = False

    def connect(self) -> RayCluster:
        options = self.options
        if options.local:
            # Before Ray is imported: it reads these once, and its child processes inherit them.
            os.environ.update(_PIN_TO_LOOPBACK)
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        import ray

        if options.local and ray._private.ray_constants.ENABLE_RAY_CLUSTER:
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
            kwargs["address"] = options.address
        ray.init(**kwargs)
        self.connected = True
        return self

    def start_serve(self) -> None:
        """Start (or join) Serve with no HTTP proxy of its own."""
        from ray import serve

        serve.start(proxy_location="Disabled", http_options={"host": LOOPBACK})

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
