"""What the router hands a request to: a replica, behind one small Protocol.

A replica is one running copy of a deployment for one environment. The local
kind is a supervised ``kingpost serve`` process on 127.0.0.1
(``process_replica.ProcessReplica``): anything with these members, built by a
``ReplicaFactory``, plugs into ``ReplicaPool`` (routing, parking, autoscaling,
promotion stay as they are). ``Backends`` picks the factory by the
environment's ``backend`` (``process``, ``ray``). A factory whose
``scales_itself`` is true makes one replica per pool that is a whole group
scaling on its own (a Ray Serve application, ``kingpost.scale``): the pool keeps
that one and hands it the environment's settings (``configure``) instead of
adding and removing replicas.

    factory: ReplicaFactory = ProcessReplicaFactory(options)
    replica = factory(spec, on_change=pool.replica_changed)
    replica.start()
    await replica.forward(scope, receive, send, "/predict")
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from kingpost.platform.settings import Autoscaling

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class ReplicaState(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    RESTARTING = "restarting"  # crashed after being ready; coming back with back-off
    FAILED = "failed"  # never got ready: the deployment is broken
    STOPPED = "stopped"


@dataclass(frozen=True)
class ReplicaSpec:
    """What to run: a deployment's files, for an environment (None: reached by its id)."""

    deployment_id: str
    model_dir: Path
    environment: str | None
    log_path: Path
    watch: bool = False  # the development deployment reloads on every save
    backend: str = "process"  # which of the platform's ``Backends`` runs it


class ReplicaStatus:
    """What every replica kind keeps (its spec, ``in_flight``, ``state`` and ``error``),
    and the one way to change state (which tells the pool through ``on_change``)."""

    def __init__(self, spec: ReplicaSpec, on_change: Callable[[Any], None]) -> None:
        self.spec = spec
        self.on_change = on_change
        self.in_flight = 0
        self._state = ReplicaState.STARTING
        self._error: str | None = None

    @property
    def state(self) -> ReplicaState:
        return self._state

    @property
    def error(self) -> str | None:
        return self._error

    def _set_state(self, state: ReplicaState) -> None:
        if state is not self._state:
            self._state = state
            self.on_change(self)


class Replica(Protocol):
    """One copy of a deployment that answers requests.

    ``in_flight`` is kept by the pool around each request. ``on_change`` (given
    to the factory) is called whenever ``state`` changes.
    """

    name: str
    in_flight: int

    @property
    def state(self) -> ReplicaState: ...

    @property
    def error(self) -> str | None:
        """Why it failed to start (its last output lines), when ``state`` is FAILED."""
        ...

    def describe(self) -> dict[str, object]:
        """What an operator sees in the admin API (name, state, address, ...)."""
        ...

    def start(self) -> None:
        """Begin starting (on the event loop); ``state`` goes to READY or FAILED."""

    async def forward(self, scope: Scope, receive: Receive, send: Send, path: str) -> int | None:
        """Answer an HTTP request at ``path`` of the replica, streaming both ways.

        Returns the status of the reply (for the platform's metrics; None if unknown).

        Raises ReplicaUnreachableError when nothing was sent (another replica may
        take the request), RequestError subclasses for other failures before the
        reply began.
        """

    async def websocket(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        """Relay an (unaccepted) websocket to ``path`` of the replica until either side closes."""

    async def stop(self, grace: float) -> None:
        """Stop: requests under way get ``grace`` seconds to finish."""


class ScalingReplica(Replica, Protocol):
    """A replica that is a group scaling by itself (a Serve application)."""

    def configure(self, settings: Autoscaling) -> None:
        """Apply the environment's autoscaling (the first call comes before ``start``)."""


class ReplicaFactory(Protocol):
    def __call__(self, spec: ReplicaSpec, on_change: Callable[[Replica], None]) -> Replica: ...


DEFAULT_BACKEND = "process"


class Backends:
    """Replica factories by backend name; a spec's ``backend`` picks the one that runs it.

    Backends(ProcessReplicaFactory(options), ray=RayReplicaFactory(...))
    """

    def __init__(self, process: ReplicaFactory, **others: ReplicaFactory) -> None:
        self.factories: dict[str, ReplicaFactory] = {DEFAULT_BACKEND: process, **others}

    def __call__(self, spec: ReplicaSpec, on_change: Callable[[Replica], None]) -> Replica:
        return self.factories[spec.backend](spec, on_change)

    def names(self) -> list[str]:
        return sorted(self.factories)

    def scales_itself(self, spec: ReplicaSpec) -> bool:
        return scales_itself(self.factories[spec.backend], spec)

    async def aclose(self) -> None:
        """Close the backends that hold something (a Ray connection), after the pools."""
        for factory in self.factories.values():
            close = getattr(factory, "aclose", None)
            if close is not None:
                await close()


def scales_itself(factory: ReplicaFactory, spec: ReplicaSpec) -> bool:
    """Whether ``factory`` runs ``spec`` as one replica that scales itself."""
    if isinstance(factory, Backends):
        return factory.scales_itself(spec)
    return bool(getattr(factory, "scales_itself", False))


class ReplicaUnreachableError(Exception):
    """The replica could not be reached; nothing of the request was sent."""
