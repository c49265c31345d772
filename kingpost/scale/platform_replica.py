"""The platform's ``ray`` backend: an environment's replicas as one Ray Serve application.

``kingpost up`` hands environments with ``backend: ray`` to this factory. The
platform's pool keeps one ``RayReplica`` for a deployment in an environment,
which is a Serve application of its own (named ``DEPLOYMENT-ENVIRONMENT``, with
that as its route prefix, so the two deployments of a promotion live side by
side); Serve places, balances and autoscales its replicas with the
environment's settings mapped as ``Scaling`` maps them (``min_replica: 0``
scales to zero, a request parks in Serve while one starts). The platform still
does keys, routing, promotion (start the candidate's application, wait until it
runs, switch, let the old one finish, delete it) and metrics. Requests reach
the application through the same front ``kingpost serve --ray`` uses, so the
reply status, streams, disconnects and websockets behave alike; a replica's
health check is the model's readiness (``is_healthy``).

    factory = RayReplicaFactory(build_app, serve_options, ClusterOptions())
    Backends(process_factory, ray=factory)
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kingpost.platform.replica import (
    Receive,
    Replica,
    ReplicaSpec,
    ReplicaState,
    ReplicaStatus,
    ReplicaUnreachableError,
    Scope,
    Send,
)
from kingpost.platform.settings import Autoscaling
from kingpost.scale.application import AppBuilder, ModelApplication
from kingpost.scale.cluster import ClusterOptions, RayCluster
from kingpost.scale.settings import Scaling

if TYPE_CHECKING:
    from kingpost.scale.front import RayFrontApp
    from kingpost.serve import ServeOptions

logger = logging.getLogger("kingpost.platform")

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def scaling_of(settings: Autoscaling) -> Scaling:
    """An environment's autoscaling in Serve's terms (PLATFORM.md, "Scale-out on Ray Serve")."""
    return Scaling(
        min_replica=settings.min_replica,
        max_replica=settings.max_replica,
        autoscaling_window=settings.autoscaling_window,
        scale_down_delay=settings.scale_down_delay,
        concurrency_target=settings.concurrency_target,
        target_utilization_percentage=settings.target_utilization_percentage,
    ).checked()


def application_name(spec: ReplicaSpec) -> str:
    return _UNSAFE.sub("_", f"{spec.deployment_id}-{spec.environment or 'deployment'}")


class RayReplicaFactory:
    """Builds ``RayReplica``s; connects to Ray with the first and leaves it in ``aclose``."""

    scales_itself = True

    def __init__(
        self,
        build_app: AppBuilder,
        serve_options: Callable[[ReplicaSpec], ServeOptions],
        cluster: ClusterOptions,
    ) -> None:
        self.build_app = build_app
        self.serve_options = serve_options
        self.cluster = RayCluster(cluster)
        self._lock = threading.Lock()

    def __call__(self, spec: ReplicaSpec, on_change: Callable[[Replica], None]) -> RayReplica:
        return RayReplica(spec, self, on_change)

    async def connect(self) -> None:
        """Join (or start) the cluster and Serve, once, without blocking the loop."""
        if self.cluster.connected:
            return
        handlers = {sig: signal.getsignal(sig) for sig in _STOP_SIGNALS}
        await asyncio.to_thread(self._connect)
        if threading.current_thread() is threading.main_thread():
            # Ray's core worker put its own SIGTERM handler in place (it aborts the
            # process): the platform's own shutdown must stay what a signal starts.
            for sig, handler in handlers.items():
                if handler is not None:
                    signal.signal(sig, handler)

    def _connect(self) -> None:
        with self._lock:
            if not self.cluster.connected:
                self.cluster.connect()
                self.cluster.start_serve()

    async def aclose(self) -> None:
        """Leave Ray: a local cluster (and its Serve) stops; on this loop, as Serve's router is."""
        if not self.cluster.connected:
            return
        if self.cluster.options.local:
            from ray import serve

            try:
                await serve.shutdown_async()
            except Exception:
                logger.exception("serve.shutdown failed")
        await asyncio.to_thread(self.cluster.close, False)


class RayReplica(ReplicaStatus):
    """One Serve application of a deployment for an environment (see the module docstring)."""

    def __init__(
        self, spec: ReplicaSpec, factory: RayReplicaFactory, on_change: Callable[[Replica], None]
    ) -> None:
        super().__init__(spec, on_change)
        self.factory = factory
        self.app_name = application_name(spec)
        self.name = f"{spec.deployment_id}/ray:{self.app_name}"
        self.settings = Autoscaling()
        self.application: ModelApplication | None = None
        self.front: RayFrontApp | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._updates = asyncio.Lock()

    def describe(self) -> dict[str, object]:
        scaling = scaling_of(self.settings)
        return {
            "name": self.name,
            "state": self._state.value,
            "backend": "ray",
            "application": self.app_name,
            "min_replicas": scaling.min_replica,
            "max_replicas": scaling.max_replica,
            "in_flight": self.in_flight,
        }

    def configure(self, settings: Autoscaling) -> None:
        self.settings = settings
        if self.application is not None:
            self._spawn(self._update())

    def start(self) -> None:
        self._spawn(self._deploy())

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deploy(self) -> None:
        from kingpost.scale.application import deploy_model

        spec = self.spec
        try:
            await self.factory.connect()
            options = self.factory.serve_options(spec)
            self.application = await asyncio.to_thread(
                deploy_model,
                options,
                self.factory.build_app,
                name=self.app_name,
                route_prefix="/" + self.app_name,
                scaling=scaling_of(self.settings),
            )
        except Exception as exc:  # Serve names the replica's failure (a model that cannot load)
            logger.error("deployment %s on Ray: %s", spec.deployment_id, exc)
            self._error = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
            await asyncio.to_thread(_delete, self.app_name)
            self._set_state(ReplicaState.FAILED)
            return
        if self._state is ReplicaState.STOPPED:  # stopped while deploying
            await asyncio.to_thread(_delete, self.app_name)
            return
        self.front = self.application.front()
        self.front.open_handle()  # on this loop, where Serve's router then runs
        logger.info("deployment %s is the Serve application %r", spec.deployment_id, self.app_name)
        self._set_state(ReplicaState.READY)

    async def _update(self) -> None:
        async with self._updates:
            application = self.application
            if application is None or self._state is not ReplicaState.READY:
                return
            try:
                await asyncio.to_thread(application.update, scaling_of(self.settings))
            except Exception:
                logger.exception("updating the Serve application %r failed", self.app_name)

    async def forward(self, scope: Scope, receive: Receive, send: Send, path: str) -> int | None:
        front = self.front
        if front is None or self._state is not ReplicaState.READY:
            raise ReplicaUnreachableError(f"replica {self.name} is {self._state.value}")
        status: int | None = None

        async def noted(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await front.handle_http(_at(scope, path), receive, noted)
        return status

    async def websocket(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        front = self.front
        if front is None or self._state is not ReplicaState.READY:
            await receive()
            await send({"type": "websocket.close", "code": 1013, "reason": "not ready"})
            return
        await front.handle_websocket(_at(scope, path), receive, send)

    async def stop(self, grace: float) -> None:
        """Delete the application (the pool waited for this replica's requests first)."""
        was = self._state
        self._set_state(ReplicaState.STOPPED)
        if self.front is not None:
            self.front.draining = True
        if was in (ReplicaState.READY, ReplicaState.FAILED) or self.application is not None:
            await asyncio.to_thread(_delete, self.app_name)


def _at(scope: Scope, path: str) -> dict[str, Any]:
    """The scope as the replica's app should see it: at ``path``, no platform prefix."""
    return {**scope, "path": path, "raw_path": path.encode(), "root_path": ""}


def _delete(name: str) -> None:
    from ray import serve

    try:
        serve.delete(name)
    except Exception:
        logger.exception("could not delete the Serve application %r", name)
