"""The replicas of one deployment in one environment: picking, parking, scaling.

A request goes to the ready replica least utilised relative to the
concurrency target (ties to the oldest, so light load keeps to few replicas).
It is parked, not rejected, when no replica is ready (scaled to zero,
restarting) or when all are full while more are starting; a replica getting
ready or a request finishing lets parked ones go on. Parking is bounded: past
``park_timeout`` seconds or ``park_limit`` waiting requests, 503 with
``Retry-After``. An autoscaling loop samples the load and applies
``Autoscaler``'s decisions; replicas taken away first finish what they serve.

    pool = ReplicaPool(key, spec, settings, factory, PoolOptions())
    pool.start()
    await pool.handle(scope, receive, send, "/predict")
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from kingpost.errors import UnavailableError
from kingpost.platform.autoscaler import Autoscaler
from kingpost.platform.metrics import PoolStats
from kingpost.platform.replica import (
    Receive,
    Replica,
    ReplicaFactory,
    ReplicaSpec,
    ReplicaState,
    ReplicaUnreachableError,
    ScalingReplica,
    Scope,
    Send,
    scales_itself,
)
from kingpost.platform.settings import Autoscaling

logger = logging.getLogger("kingpost.platform")

PoolKey = tuple[str, str | None]  # (deployment id, environment name or None)
_RETRIES = 3  # replicas tried when one refuses the connection


@dataclass(frozen=True)
class PoolOptions:
    park_timeout: float = 60.0
    park_limit: int = 1000
    grace: float = 30.0


class ReplicaPool:
    def __init__(
        self,
        key: PoolKey,
        spec: ReplicaSpec,
        settings: Autoscaling,
        factory: ReplicaFactory,
        options: PoolOptions,
        on_status: Callable[[ReplicaPool], None] | None = None,
        stats: PoolStats | None = None,
    ) -> None:
        self.key = key
        self.stats = stats if stats is not None else PoolStats("", key[1], key[0])
        self.spec = spec
        self.factory = factory
        self.options = options
        self.on_status = on_status
        self.autoscaler = Autoscaler(settings)
        self.replicas: list[Replica] = []  # live: starting, ready or restarting
        self.ready: list[Replica] = []  # the ones requests may go to
        self.retiring: list[Replica] = []  # finishing their requests before they stop
        self.parked: collections.deque[asyncio.Future[None]] = collections.deque()
        self.error: str | None = None  # set when a replica never got ready
        self.target = settings.concurrency_target
        # One replica that is a self-scaling group (a Serve application), see replica.py.
        self.scales_itself = scales_itself(factory, spec)
        self._poke: asyncio.Event | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._retire_tasks: set[asyncio.Task[None]] = set()
        self._cold_since: float | None = None  # scaling up from zero began then
        self.closed = False

    # -- status ----------------------------------------------------------------

    @property
    def settings(self) -> Autoscaling:
        return self.autoscaler.settings

    @property
    def in_flight(self) -> int:
        return sum(r.in_flight for r in self.replicas) + sum(r.in_flight for r in self.retiring)

    @property
    def load(self) -> int:
        return sum(r.in_flight for r in self.replicas) + len(self.parked)

    @property
    def starting(self) -> int:
        return sum(1 for r in self.replicas if r.state is not ReplicaState.READY)

    def describe(self) -> dict[str, object]:
        return {
            "replicas": len(self.replicas),
            "ready": len(self.ready),
            "starting": self.starting,
            "in_flight": self.in_flight,
            "parked": len(self.parked),
            "error": self.error,
            "list": [replica.describe() for replica in self.replicas],
        }

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        self._poke = asyncio.Event()
        self._loop_task = asyncio.get_running_loop().create_task(self._scaling_loop())
        self._scale_to(self.autoscaler.decide(time.monotonic(), 0))

    def configure(self, settings: Autoscaling) -> None:
        self.autoscaler.configure(settings)
        self.target = settings.concurrency_target
        if self.scales_itself:
            for replica in self.replicas:
                cast(ScalingReplica, replica).configure(settings)
        self.poke()

    def poke(self) -> None:
        """Decide now instead of at the next tick."""
        if self._poke is not None:
            self._poke.set()

    async def close(self, grace: float | None = None) -> None:
        """Stop every replica (requests under way get ``grace`` seconds)."""
        self.closed = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        self._fail_parked(UnavailableError("the deployment is shutting down", retry_after=1))
        replicas = self.replicas + self.retiring
        self.replicas, self.ready, self.retiring = [], [], []
        await asyncio.gather(
            *(
                self._drain_and_stop(r, self.options.grace if grace is None else grace)
                for r in replicas
            ),
            *self._retire_tasks,
            return_exceptions=True,
        )

    # -- requests --------------------------------------------------------------

    def pick(self) -> Replica | None:
        best: Replica | None = None
        best_load = 1 << 62
        for replica in self.ready:
            if replica.in_flight < best_load:
                best, best_load = replica, replica.in_flight
        if best is None:
            return None
        if best_load >= self.target and self.starting:
            return None  # all full while more are starting: wait for one of them
        return best

    async def acquire(self) -> Replica:
        """A replica to send a request to, parking for one if none has room."""
        replica = self.pick()
        if replica is not None:
            return replica
        return await self._park()

    async def handle(self, scope: Scope, receive: Receive, send: Send, path: str) -> int | None:
        """Forward one HTTP request to a replica of this pool; the reply's status."""
        for attempt in range(_RETRIES):
            replica = self.pick() or await self._park()
            replica.in_flight += 1
            try:
                return await replica.forward(scope, receive, send, path)
            except ReplicaUnreachableError:
                if attempt == _RETRIES - 1:
                    raise UnavailableError(
                        "no replica of the deployment could be reached", retry_after=1
                    ) from None
            finally:
                replica.in_flight -= 1
                if self.parked:
                    self._wake(1)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def handle_websocket(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        replica = await self.acquire()
        replica.in_flight += 1
        try:
            await replica.websocket(scope, receive, send, path)
        finally:
            replica.in_flight -= 1
            if self.parked:
                self._wake(1)

    async def wake(self) -> None:
        """Start a replica if there is none (``wake``), without a request."""
        self.autoscaler.hold(time.monotonic())
        if not self.replicas:
            self._scale_to(max(1, self.autoscaler.bounds()[0]))

    async def _park(self) -> Replica:
        if self.error is not None:
            raise UnavailableError(f"the deployment failed to start: {self.error}", retry_after=5)
        if len(self.parked) >= self.options.park_limit:
            raise UnavailableError("too many requests are waiting for a replica", retry_after=1)
        if not self.replicas:
            self.poke()  # scaled to zero: start one now, not at the next tick
        deadline = time.monotonic() + self.options.park_timeout
        loop = asyncio.get_running_loop()
        while True:
            waiter: asyncio.Future[None] = loop.create_future()
            self.parked.append(waiter)
            self.poke()
            try:
                remaining = deadline - time.monotonic()
                await asyncio.wait_for(waiter, max(0.0, remaining))
            except TimeoutError:
                raise UnavailableError(
                    f"no replica was ready within {self.options.park_timeout:g} s",
                    retry_after=1,
                ) from None
            finally:
                with contextlib.suppress(ValueError):
                    self.parked.remove(waiter)
            replica = self.pick()
            if replica is not None:
                return replica

    def _wake(self, count: int) -> None:
        parked = self.parked
        while parked and count:
            waiter = parked.popleft()
            if not waiter.done():
                waiter.set_result(None)
                count -= 1

    def _fail_parked(self, exc: Exception) -> None:
        while self.parked:
            waiter = self.parked.popleft()
            if not waiter.done():
                waiter.set_exception(exc)

    # -- replicas ----------------------------------------------------------------

    def replica_changed(self, replica: Replica) -> None:
        state = replica.state
        if replica in self.replicas:
            if state is ReplicaState.READY:
                if replica not in self.ready:
                    self.ready.append(replica)
                self.error = None
                now = time.monotonic()
                self.autoscaler.hold(now)
                if self._cold_since is not None:
                    self.stats.observe_cold_start(now - self._cold_since)
                    self._cold_since = None
                self._wake(len(self.parked))
            elif replica in self.ready:
                self.ready.remove(replica)
            if state is ReplicaState.FAILED:
                self.replicas.remove(replica)
                self.error = replica.error or "the replica failed to start"
                if not self.ready:
                    self._fail_parked(
                        UnavailableError(
                            f"the deployment failed to start: {self.error}", retry_after=5
                        )
                    )
        if self.on_status is not None:
            self.on_status(self)

    def _scale_to(self, count: int) -> None:
        if self.closed:
            return
        if self.scales_itself:
            count = 1  # the group scales itself, down to zero where allowed
        current = len(self.replicas)
        if count > current:
            logger.info("deployment %s (%s): %d -> %d replicas", *self.key, current, count)
            if not self.ready:
                self._cold_since = self._cold_since or time.monotonic()
            for _ in range(count - current):
                replica = self.factory(self.spec, self.replica_changed)
                self.replicas.append(replica)
                if self.scales_itself:
                    cast(ScalingReplica, replica).configure(self.settings)
                replica.start()
        elif count < current:
            logger.info("deployment %s (%s): %d -> %d replicas", *self.key, current, count)
            # Not-yet-ready ones first, then the least busy, newest first.
            order = sorted(
                reversed(self.replicas),
                key=lambda r: (r.state is ReplicaState.READY, r.in_flight),
            )
            for replica in order[: current - count]:
                self.replicas.remove(replica)
                if replica in self.ready:
                    self.ready.remove(replica)
                self.retiring.append(replica)
                task = asyncio.get_running_loop().create_task(self._retire(replica))
                self._retire_tasks.add(task)
                task.add_done_callback(self._retire_tasks.discard)
        if self.on_status is not None:
            self.on_status(self)

    async def _retire(self, replica: Replica) -> None:
        try:
            await self._drain_and_stop(replica, self.options.grace)
        finally:
            with contextlib.suppress(ValueError):
                self.retiring.remove(replica)
            if self.on_status is not None:
                self.on_status(self)

    @staticmethod
    async def _drain_and_stop(replica: Replica, grace: float) -> None:
        deadline = time.monotonic() + grace
        while replica.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await replica.stop(max(1.0, deadline - time.monotonic()))

    def scale_now(self) -> None:
        """Apply the autoscaler's bounds at once (after a floor or ceiling changed)."""
        self._scale_to(self.autoscaler.decide(time.monotonic(), len(self.replicas)))

    async def wait_ready(self, count: int, timeout: float) -> None:
        """Until ``count`` replicas are ready; UnavailableError on failure or timeout."""
        deadline = time.monotonic() + timeout
        if self.scales_itself:
            count = min(count, 1)
        while len(self.ready) < count:
            if self.error is not None and not self.starting:
                raise UnavailableError(f"the deployment failed to start: {self.error}")
            if time.monotonic() >= deadline:
                raise UnavailableError(f"the deployment was not ready within {timeout:g} s")
            await asyncio.sleep(0.02)

    async def _scaling_loop(self) -> None:
        assert self._poke is not None
        while True:
            tick = min(1.0, max(0.05, self.settings.autoscaling_window / 20))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), tick)
            self._poke.clear()
            if self.scales_itself:
                if not self.replicas and self.error is None:  # a broken one waits for activate
                    self._scale_to(1)
                continue
            now = time.monotonic()
            self.autoscaler.observe(now, self.load)
            wanted = self.autoscaler.decide(now, len(self.replicas))
            if self.error is not None and not self.ready and wanted > 0 and not self.replicas:
                continue  # broken: do not start it over and over; activate tries again
            if wanted < len(self.replicas) and any(
                r.state is ReplicaState.STARTING for r in self.replicas
            ):
                continue  # one still starting was asked for (a request, a wake): let it come up
            if wanted != len(self.replicas):
                self._scale_to(wanted)
