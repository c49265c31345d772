"""Promoting a deployment to an environment with zero downtime, atomic or rolling.

Atomic: the candidate's replicas start (as many as the environment runs now)
and become ready before any traffic moves; then the environment's traffic is
swapped in one assignment and the store updated; the previous deployment
finishes its in-flight requests and is scaled down (unless asked to stay).

Rolling: traffic moves in steps of ``step_percent``: at each step the
candidate is scaled up to its share and must be ready before the share moves,
and the previous deployment is scaled down to what is left; ``step_interval``
seconds pass between steps. A rolling promotion can be paused, resumed,
cancelled (traffic goes back) or forced (the rest happens at once).

One promotion per environment at a time: the store's lock makes a second one,
from any platform process, a 409.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from typing import TYPE_CHECKING

from kingpost.errors import ConflictError
from kingpost.platform.store import DeploymentRecord, EnvironmentRecord
from kingpost.platform.traffic import Traffic

if TYPE_CHECKING:
    from kingpost.platform.controller import Platform
    from kingpost.platform.pool import ReplicaPool

logger = logging.getLogger("kingpost.platform")


def busy(environment: str) -> ConflictError:
    return ConflictError(f"a promotion to environment {environment!r} is already under way")


class Promotion:
    def __init__(
        self,
        platform: Platform,
        env: EnvironmentRecord,
        deployment: DeploymentRecord,
        rolling: bool,
        scale_down_previous: bool,
        step_percent: float,
        step_interval: float,
        follow: bool,
    ) -> None:
        self.platform = platform
        self.env = env
        self.deployment = deployment
        self.rolling = rolling
        self.scale_down_previous = scale_down_previous
        self.step = step_percent / 100
        self.step_interval = step_interval
        self.follow = follow  # another process promoted: switch here, write nothing
        self.key = (env.model_id, env.name)
        self.state = "starting"
        self.share = 0.0
        self.error: str | None = None
        self.started = time.time()
        self.switched_after: float | None = None  # seconds from start to the switch
        self.previous: str | None = None
        self._resume = asyncio.Event()
        self._resume.set()
        self._wake = asyncio.Event()
        self.cancelled = False
        self.forced = False
        self.task = platform.spawn(self._run())

    def describe(self) -> dict[str, object]:
        return {
            "deployment_id": self.deployment.id,
            "previous_deployment_id": self.previous,
            "environment": self.env.name,
            "rolling": self.rolling,
            "state": self.state,
            "share": self.share,
            "error": self.error,
            "switched_after": self.switched_after,
        }

    # -- controls ------------------------------------------------------------------

    def pause(self) -> None:
        self._resume.clear()
        self.state = "paused"

    def resume(self) -> None:
        self._resume.set()
        self._wake.set()

    def cancel(self) -> None:
        self.cancelled = True
        self.resume()

    def force(self) -> None:
        self.forced = True
        self.resume()

    # -- the run ---------------------------------------------------------------------

    async def _run(self) -> None:
        platform = self.platform
        traffic = platform.traffic.get(self.key)
        old = traffic.primary if traffic is not None else None
        self.previous = old.key[0] if old is not None else None
        settings = self.env.autoscaling
        candidate: ReplicaPool | None = None
        try:
            if old is not None and old.key == (self.deployment.id, self.env.name):
                self._finish(old, None)  # already serving
                return
            count = max(1, settings.min_replica, len(old.replicas) if old else 0)
            count = min(count, settings.max_replica)
            candidate = platform.pool_for(self.deployment, self.env.name, settings)
            rolling = self.rolling and traffic is not None and old is not None
            if rolling and not await self._shift(traffic, old, candidate, count):  # type: ignore[arg-type]
                return
            await self._scale(candidate, count)
            self._finish(candidate, old)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.state = "failed"
            self.error = str(exc)
            logger.error(
                "promoting deployment %s to %s failed: %s", self.deployment.id, self.env.name, exc
            )
            if traffic is not None:
                traffic.candidate, traffic.share = None, 0.0
            if old is not None:
                old.autoscaler.ceiling = None
            if candidate is not None and candidate is not (traffic.primary if traffic else None):
                platform.spawn(platform.retire(candidate))
            if not self.follow:
                platform.store.finish_promotion(*self.key, platform.owner, None)
        finally:
            platform.promotions.pop(self.key, None)
            if not self.follow:
                platform.refresh()

    async def _scale(self, pool: ReplicaPool, count: int) -> None:
        pool.autoscaler.floor = count
        pool.scale_now()
        await pool.wait_ready(count, self.platform.options.replica_start_timeout)

    def _finish(self, candidate: ReplicaPool, old: ReplicaPool | None) -> None:
        """The switch: store first (one transaction), then the traffic (one assignment)."""
        platform = self.platform
        if not self.follow:
            platform.store.finish_promotion(*self.key, platform.owner, self.deployment.id)
        platform.traffic[self.key] = Traffic(candidate)
        self.switched_after = time.time() - self.started
        self.share = 1.0
        candidate.autoscaler.floor = None
        candidate.autoscaler.hold(time.monotonic())
        self.state = "done"
        logger.info(
            "environment %s now serves deployment %s (switched after %.2f s)",
            self.env.name,
            self.deployment.id,
            self.switched_after,
        )
        if old is not None and old is not candidate:
            old.autoscaler.ceiling = None
            if self.scale_down_previous:
                platform.spawn(platform.retire(old))
        # Reached by its id, the deployment now goes to the environment's replicas.
        by_id = platform.pools.get((self.deployment.id, None))
        if by_id is not None and not self.deployment.development:
            platform.spawn(platform.retire(by_id))

    async def _shift(
        self, traffic: Traffic, old: ReplicaPool, candidate: ReplicaPool, count: int
    ) -> bool:
        """Move traffic in steps; False if cancelled (traffic back on ``old``)."""
        share = 0.0
        while share < 1.0 and not self.forced:
            await self._resume.wait()
            if self.cancelled:
                return self._cancel(traffic, old, candidate)
            share = min(1.0, round(share + self.step, 6))
            self._wake.clear()
            self.state = "shifting"
            await self._scale(candidate, max(1, math.ceil(count * share)))
            if share >= 1.0:
                break
            traffic.candidate, traffic.share = candidate, share
            self.share = share
            old.autoscaler.ceiling = max(1, math.ceil(count * (1 - share)))
            old.scale_now()
            if not (self.forced or self.cancelled):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.step_interval)
        if self.cancelled:
            return self._cancel(traffic, old, candidate)
        return True

    def _cancel(self, traffic: Traffic, old: ReplicaPool, candidate: ReplicaPool) -> bool:
        traffic.candidate, traffic.share = None, 0.0
        old.autoscaler.ceiling = None
        old.scale_now()
        self.state = "cancelled"
        self.share = 0.0
        platform = self.platform
        platform.spawn(platform.retire(candidate))
        platform.store.finish_promotion(*self.key, platform.owner, None)
        return False


def start(
    platform: Platform,
    env: EnvironmentRecord,
    deployment: DeploymentRecord,
    rolling: bool,
    scale_down_previous: bool,
    step_percent: float,
    step_interval: float,
) -> Promotion:
    return Promotion(
        platform,
        env,
        deployment,
        rolling,
        scale_down_previous,
        step_percent,
        step_interval,
        follow=False,
    )


def follow(platform: Platform, env: EnvironmentRecord, deployment: DeploymentRecord) -> Promotion:
    """Switch this process's traffic to what another process promoted, once ready here."""
    return Promotion(platform, env, deployment, False, True, 100.0, 0.0, follow=True)
