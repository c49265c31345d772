"""The platform: the state store on one side, the live pools and traffic on the other.

Every change goes to the store first, then the in-memory picture (a
``Snapshot`` plus ``pools`` and ``traffic``) is brought in line with it. The
same reconciliation runs when another platform process changed the shared
state (seen through the store's generation counter), so that two processes
on one PostgreSQL state serve the same models, each with its own replicas.

    platform = Platform(options, store, factory)
    await platform.start()           # replicas of every environment come back
    pool = platform.resolve(invocation)
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kingpost.errors import InvalidRequestError, NotFoundError
from kingpost.platform import bundle, promotion
from kingpost.platform.metrics import PlatformMetrics
from kingpost.platform.pool import PoolKey, PoolOptions, ReplicaPool
from kingpost.platform.replica import DEFAULT_BACKEND, Backends, ReplicaFactory, ReplicaSpec
from kingpost.platform.router import DEPLOYMENT, DEVELOPMENT, Invocation
from kingpost.platform.settings import Autoscaling, PlatformOptions, development_autoscaling
from kingpost.platform.store import (
    DeploymentRecord,
    EnvironmentRecord,
    ModelRecord,
    Snapshot,
    StateStore,
    check_name,
)
from kingpost.platform.traffic import Traffic

logger = logging.getLogger("kingpost.platform")

# How long one promotion may hold an environment's lock before others may take it.
PROMOTION_LEASE = 3600.0


@dataclass(frozen=True)
class Target:
    """What an invocation resolved to (handed to the async routes too)."""

    model: ModelRecord
    deployment: DeploymentRecord
    environment: str | None
    pool: ReplicaPool


class Platform:
    def __init__(self, options: PlatformOptions, store: StateStore, factory: ReplicaFactory):
        self.options = options
        self.store = store
        self.factory = factory
        self.pool_options = PoolOptions(
            options.park_timeout, options.park_limit, options.replica_grace
        )
        self.snapshot = Snapshot()
        self.pools: dict[PoolKey, ReplicaPool] = {}
        self.traffic: dict[tuple[str, str], Traffic] = {}
        self.promotions: dict[tuple[str, str], promotion.Promotion] = {}
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
        self._tasks: set[asyncio.Task[None]] = set()
        self._poller: asyncio.Task[None] | None = None
        self.started_at = time.time()
        self.metrics = PlatformMetrics(self)

    @property
    def deployments_dir(self) -> Path:
        return self.options.home / "deployments"

    @property
    def logs_dir(self) -> Path:
        return self.options.home / "logs"

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        self.deployments_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        if not self.options.shared:
            self.store.clear_promotions()  # only this process uses the file: none is running
        self.refresh()
        if self.options.shared:  # only other processes change a shared state behind our back
            self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        pools, self.pools = list(self.pools.values()), {}
        self.traffic.clear()
        await asyncio.gather(*(pool.close() for pool in pools), return_exceptions=True)
        if isinstance(self.factory, Backends):
            await self.factory.aclose()

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.options.poll_interval)
            try:
                generation = await asyncio.to_thread(self.store.generation)
                if generation != self.snapshot.generation:
                    self.refresh()
            except Exception:
                logger.exception("reading the state store failed")

    # -- reconciliation ----------------------------------------------------------

    def refresh(self) -> None:
        """Re-read the store and bring pools and traffic in line with it."""
        self.snapshot = snapshot = self.store.snapshot()
        wanted: set[tuple[str, str]] = set()
        for key, env in snapshot.environments.items():
            deployment = snapshot.deployments.get(env.deployment_id or "")
            if deployment is None or not deployment.active:
                continue
            wanted.add(key)
            if key in self.promotions:
                continue  # the promotion moves the traffic itself
            traffic = self.traffic.get(key)
            if traffic is None:
                pool = self.pool_for(deployment, env.name, env.autoscaling)
                self.traffic[key] = Traffic(pool)
            elif traffic.deployment_id != deployment.id:
                # Another process promoted: switch here too, once ours is ready.
                self.promotions[key] = promotion.follow(self, env, deployment)
            else:
                if traffic.primary.settings != env.autoscaling:
                    traffic.primary.configure(env.autoscaling)
        for key in [key for key in self.traffic if key not in wanted]:
            if key not in self.promotions:
                traffic = self.traffic.pop(key)
                self.spawn(self.retire(traffic.primary))
        for pool_key, pool in list(self.pools.items()):
            deployment = snapshot.deployments.get(pool_key[0])
            if deployment is None or not deployment.active:
                self.spawn(self.retire(pool))

    def pool_for(
        self, deployment: DeploymentRecord, environment: str | None, settings: Autoscaling
    ) -> ReplicaPool:
        """The pool running ``deployment`` for ``environment``, started if new."""
        key: PoolKey = (deployment.id, environment)
        pool = self.pools.get(key)
        if pool is not None and not pool.closed:
            return pool
        spec = ReplicaSpec(
            deployment_id=deployment.id,
            model_dir=self.files_of(deployment),
            environment=environment,
            log_path=self.logs_dir / f"{deployment.id}.log",
            watch=deployment.development,
            backend=self.backend_of(deployment, environment, settings),
        )
        model = self.snapshot.models[deployment.model_id].name
        stats = self.metrics.stats_for(deployment.id, environment, model)
        pool = ReplicaPool(
            key, spec, settings, self.factory, self.pool_options, self._pool_status, stats
        )
        self.pools[key] = pool
        pool.start()
        return pool

    def backend_of(
        self, deployment: DeploymentRecord, environment: str | None, settings: Autoscaling
    ) -> str:
        """The environment's backend, else the platform's; the development one is a process."""
        if deployment.development:
            return DEFAULT_BACKEND  # reloaded on save: a local process
        backend = (settings.backend if environment else None) or self.options.backend
        self.check_backend(backend)
        return backend

    def check_backend(self, backend: str | None) -> None:
        names = self.factory.names() if isinstance(self.factory, Backends) else [DEFAULT_BACKEND]
        if backend is not None and backend not in names:
            hint = " (pip install 'kingpost[ray]')" if backend == "ray" else ""
            raise InvalidRequestError(f"the replica backend {backend!r} is not available{hint}")

    async def retire(self, pool: ReplicaPool) -> None:
        """Stop routing to ``pool``; once its parked and in-flight requests are done, stop it."""
        if self.pools.get(pool.key) is pool:
            del self.pools[pool.key]
        deadline = time.monotonic() + self.options.replica_grace
        while (pool.parked or pool.in_flight) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await pool.close()

    def files_of(self, deployment: DeploymentRecord) -> Path:
        """The deployment's model directory on this machine (extracted from the store once)."""
        if deployment.development:
            return Path(deployment.source)
        directory = self.deployments_dir / deployment.id
        if not (directory / "config.yaml").is_file():
            bundle.unpack(self.store.archive(deployment.id), directory)
        return directory

    def _pool_status(self, pool: ReplicaPool) -> None:
        deployment = self.snapshot.deployments.get(pool.key[0])
        if deployment is None:
            return
        status = deployment.status
        if pool.ready:
            status, error = "ready", None
        elif pool.error is not None:
            status, error = "failed", pool.error
        else:
            return
        if status != deployment.status:
            self.store.set_status(deployment.id, status, error)
            self.snapshot = self.store.snapshot()

    # -- resolving requests --------------------------------------------------------

    def resolve(self, invocation: Invocation) -> ReplicaPool:
        """The pool an invocation goes to; NotFoundError naming what is missing."""
        snapshot = self.snapshot
        model = snapshot.find_model(invocation.model)
        if model is None:
            raise NotFoundError(f"model {invocation.model!r} not found")
        if invocation.kind == DEVELOPMENT:
            deployment = snapshot.development_of(model.id)
            if deployment is None:
                raise NotFoundError(f"model {model.name!r} has no development deployment")
            return self._deployment_pool(deployment)
        if invocation.kind == DEPLOYMENT:
            deployment = snapshot.deployments.get(invocation.target)
            if deployment is None or deployment.model_id != model.id:
                raise NotFoundError(
                    f"deployment {invocation.target!r} of model {model.name!r} not found"
                )
            return self._deployment_pool(deployment)
        traffic = self.traffic.get((model.id, invocation.target))
        if traffic is not None:
            return traffic.choose()
        env = snapshot.environment(model.id, invocation.target)
        if env.deployment_id is None:
            raise NotFoundError(
                f"environment {env.name!r} of model {model.name!r} has no deployment"
            )
        raise NotFoundError(
            f"the deployment of environment {env.name!r} of model {model.name!r} is deactivated"
        )

    def _deployment_pool(self, deployment: DeploymentRecord) -> ReplicaPool:
        if not deployment.active:
            raise NotFoundError(f"deployment {deployment.id!r} is deactivated")
        for traffic in self.traffic.values():
            if traffic.deployment_id == deployment.id:
                return traffic.primary  # already running for an environment: use those
        pool = self.pools.get((deployment.id, None))
        if pool is None or pool.closed:
            settings = development_autoscaling(self.options.development_idle)
            pool = self.pool_for(deployment, None, settings)
        return pool

    def deployment_target(self, deployment_id: str) -> Target | None:
        """Where a deployment's queued work goes (its pool, started if need be), or None
        when the deployment is gone or deactivated."""
        snapshot = self.snapshot
        deployment = snapshot.deployments.get(deployment_id)
        if deployment is None or not deployment.active:
            return None
        pool = self._deployment_pool(deployment)
        return Target(snapshot.models[deployment.model_id], deployment, pool.key[1], pool)

    def target(self, invocation: Invocation) -> Target:
        pool = self.resolve(invocation)
        snapshot = self.snapshot
        deployment = snapshot.deployment(pool.key[0])
        return Target(snapshot.models[deployment.model_id], deployment, pool.key[1], pool)

    # -- operations (the admin API calls these) ------------------------------------

    def model(self, key: str) -> ModelRecord:
        return self.snapshot.model(key)

    def create_model(self, name: str) -> ModelRecord:
        record = self.store.create_model(name)
        self.refresh()
        return record

    def ensure_model(self, name: str) -> ModelRecord:
        model = self.snapshot.find_model(name)
        return model if model is not None else self.create_model(name)

    def deploy(
        self, model_name: str, archive: bytes | None, source: str, development: bool
    ) -> DeploymentRecord:
        """Record a new deployment from an archive (or, for development, a local directory)."""
        check_name("model", model_name)
        if development:
            directory = Path(source).resolve()
            bundle.check_model_dir(directory)
            model = self.ensure_model(model_name)
            record = self.store.add_deployment(
                model.id, bundle.digest(directory), str(directory), None, True
            )
            self.refresh()
            # A new source for the one development deployment: restart its replica.
            pool = self.pools.get((record.id, None))
            if pool is not None and pool.spec.model_dir != directory:
                self.spawn(self.retire(pool))
            return self.snapshot.deployment(record.id)
        if archive is None:
            raise InvalidRequestError("a deployment needs the model directory as a .tar.gz body")
        incoming = self.deployments_dir / f".incoming-{os.urandom(4).hex()}"
        try:
            bundle.unpack(archive, incoming)
            model = self.ensure_model(model_name)
            record = self.store.add_deployment(
                model.id, bundle.digest(incoming), source, archive, False
            )
            incoming.rename(self.deployments_dir / record.id)
        finally:
            shutil.rmtree(incoming, ignore_errors=True)
        self.refresh()
        return self.snapshot.deployment(record.id)

    def start_deployment(self, deployment: DeploymentRecord) -> None:
        """Bring up a deployment reached by its id (no environment), to see it load."""
        self.store.set_status(deployment.id, "loading")
        self.refresh()
        pool = self._deployment_pool(self.snapshot.deployment(deployment.id))
        self.spawn(pool.wake())

    def promote(
        self,
        deployment_id: str,
        environment: str,
        rolling: bool = False,
        scale_down_previous: bool = True,
        step_percent: float = 25.0,
        step_interval: float = 10.0,
    ) -> promotion.Promotion:
        snapshot = self.snapshot
        deployment = snapshot.deployment(deployment_id)
        if not deployment.active:
            raise NotFoundError(f"deployment {deployment_id!r} is deactivated")
        env = snapshot.environment(deployment.model_id, environment)
        if deployment.development:
            deployment = self._freeze(deployment)
        if not 1 <= step_percent <= 100:
            raise InvalidRequestError("step_percent must be between 1 and 100")
        key = (env.model_id, env.name)
        if key in self.promotions:
            raise promotion.busy(env.name)
        self.store.lock_promotion(env.model_id, env.name, self.owner, PROMOTION_LEASE)
        if deployment.status != "ready":
            self.store.set_status(deployment.id, "loading")
        self.refresh()
        run = promotion.start(
            self, env, deployment, rolling, scale_down_previous, step_percent, step_interval
        )
        self.promotions[key] = run
        return run

    def _freeze(self, deployment: DeploymentRecord) -> DeploymentRecord:
        """An immutable deployment of the development deployment's current files."""
        model = self.snapshot.models[deployment.model_id]
        return self.deploy(
            model.name, bundle.pack(Path(deployment.source)), deployment.source, False
        )

    def set_active(self, deployment_id: str, active: bool) -> DeploymentRecord:
        self.snapshot.deployment(deployment_id)
        self.store.set_active(deployment_id, active)
        if active:
            for pool in self.pools.values():
                if pool.key[0] == deployment_id:
                    pool.error = None
        self.refresh()
        return self.snapshot.deployment(deployment_id)

    def create_environment(self, model_key: str, name: str, settings: Autoscaling) -> None:
        self.check_backend(settings.backend)
        model = self.model(model_key)
        self.store.create_environment(model.id, name, settings)
        self.refresh()

    def delete_environment(self, model_key: str, name: str) -> None:
        model = self.model(model_key)
        if (model.id, name) in self.promotions:
            raise promotion.busy(name)
        self.store.delete_environment(model.id, name)
        self.refresh()

    def set_autoscaling(self, model_key: str, name: str, changes: dict[str, object]) -> Autoscaling:
        model = self.model(model_key)
        env = self.snapshot.environment(model.id, name)
        try:
            settings = Autoscaling.model_validate({**env.autoscaling.model_dump(), **changes})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in error['loc']) or 'settings'}: {error['msg']}"
                for error in exc.errors()
            )
            raise InvalidRequestError(f"autoscaling: {problems}") from None
        self.check_backend(settings.backend)
        self.store.set_autoscaling(model.id, name, settings)
        self.refresh()
        for pool in self.pools.values():
            if pool.key == (env.deployment_id, name):
                pool.configure(settings)
        return settings

    async def wake(self, invocation: Invocation) -> ReplicaPool:
        pool = self.resolve(invocation)
        await pool.wake()
        return pool

    # -- describing --------------------------------------------------------------

    def replicas_of(self, deployment_id: str) -> dict[str, object]:
        pools = [pool for key, pool in self.pools.items() if key[0] == deployment_id]
        return {
            "replicas": sum(len(p.replicas) for p in pools),
            "ready": sum(len(p.ready) for p in pools),
            "in_flight": sum(p.in_flight for p in pools),
        }

    def describe_deployment(self, deployment: DeploymentRecord) -> dict[str, object]:
        model = self.snapshot.models[deployment.model_id]
        serving = sorted(env.name for env in self.snapshot.environments_serving(deployment.id))
        status = deployment.status if deployment.active else "inactive"
        live = self.replicas_of(deployment.id)
        if status == "ready" and not live["replicas"]:
            status = "scaled_to_zero"
        return {
            "id": deployment.id,
            "model_id": model.id,
            "model": model.name,
            "status": status,
            "active": deployment.active,
            "development": deployment.development,
            "environments": serving,
            "digest": deployment.digest,
            "source": deployment.source,
            "created_at": deployment.created_at,
            "error": deployment.error,
            **live,
        }

    def describe_environment(self, env: EnvironmentRecord) -> dict[str, object]:
        key = (env.model_id, env.name)
        traffic = self.traffic.get(key)
        pool = traffic.primary if traffic is not None else None
        run = self.promotions.get(key)
        return {
            "model_id": env.model_id,
            "model": self.snapshot.models[env.model_id].name,
            "name": env.name,
            "deployment_id": env.deployment_id,
            "autoscaling": env.autoscaling.model_dump(),
            "replicas": pool.describe() if pool is not None else None,
            "promotion": run.describe() if run is not None else None,
            "created_at": env.created_at,
        }

    def describe_model(self, model: ModelRecord) -> dict[str, object]:
        development = self.snapshot.development_of(model.id)
        return {
            "id": model.id,
            "name": model.name,
            "environments": {
                env.name: env.deployment_id for env in self.snapshot.environments_of(model.id)
            },
            "development": development.id if development is not None else None,
            "deployments": sum(
                1 for d in self.snapshot.deployments.values() if d.model_id == model.id
            ),
            "created_at": model.created_at,
        }

    def replica_states(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for pool in self.pools.values():
            for replica in pool.replicas:
                counts[replica.state.value] = counts.get(replica.state.value, 0) + 1
        return counts
