"""Settings of the platform: an environment's autoscaling, and the options of ``kingpost up``.

Autoscaling has the hosted platform's names and defaults (PLATFORM.md); the
windows and delays accept small values so that a laptop or a test can watch a
deployment scale in seconds.

    settings = Autoscaling(min_replica=1, max_replica=3, concurrency_target=4)
    settings.per_replica   # 2.8: in-flight requests per replica before scaling up
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kingpost.limits import Quota

DEFAULT_HOME = Path(os.environ.get("KINGPOST_HOME", "~/.kingpost")).expanduser()


class Autoscaling(BaseModel):
    """How many replicas an environment runs, and when it adds or removes one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_replica: int = Field(default=0, ge=0, le=64)
    max_replica: int = Field(default=1, ge=1, le=64)
    autoscaling_window: float = Field(default=60.0, gt=0, le=3600)
    scale_down_delay: float = Field(default=900.0, ge=0, le=86400)
    concurrency_target: int = Field(default=1, ge=1, le=100000)
    target_utilization_percentage: int = Field(default=70, ge=1, le=100)
    # Where the replicas run: local ``kingpost serve`` processes, or a Ray Serve
    # application (Serve then scales them with these settings). None: ``kingpost up``'s.
    backend: Literal["process", "ray"] | None = None

    @model_validator(mode="after")
    def _bounds_in_order(self) -> Autoscaling:
        if self.min_replica > self.max_replica:
            raise ValueError(
                f"min_replica ({self.min_replica}) is above max_replica ({self.max_replica})"
            )
        return self

    @property
    def per_replica(self) -> float:
        """In-flight requests one replica carries before another is wanted."""
        return self.concurrency_target * self.target_utilization_percentage / 100


# The development deployment: one replica, no autoscaling, gone when idle this long.
DEVELOPMENT_IDLE = 300.0


def development_autoscaling(idle: float = DEVELOPMENT_IDLE) -> Autoscaling:
    return Autoscaling(min_replica=0, max_replica=1, scale_down_delay=idle, autoscaling_window=1)


@dataclass
class PlatformOptions:
    """Everything ``kingpost up`` is told; the single source of truth for the platform."""

    home: Path = DEFAULT_HOME
    host: str = "127.0.0.1"
    port: int = 8080
    # None: the embedded SQLite file under ``home``; a postgresql:// URL to share one state.
    state_url: str | None = None
    file: Path | None = None  # kingpost.yaml applied once listening
    # A parked request waits this long for a replica, and at most this many wait.
    park_timeout: float = 60.0
    park_limit: int = 1000
    # The sync limit over a request until its reply begins (PLATFORM.md: 1200 s).
    request_timeout: float = 1200.0
    max_request_bytes: int = 100 << 20
    replica_start_timeout: float = 600.0
    # How long a stopped replica may finish its requests before it is killed.
    replica_grace: float = 30.0
    # How often the state store is polled for changes by other platform processes.
    poll_interval: float = 1.0
    development_idle: float = DEVELOPMENT_IDLE
    log_level: str = "info"
    playground: bool = True  # /playground and /docs for the platform's admin
    python: str | None = None  # interpreter that runs replicas (default: this one)
    # Environments that name no backend run on this one ("process" or "ray").
    backend: str = "process"
    # The Ray cluster of the ``ray`` backend (None: a local one on 127.0.0.1).
    ray_address: str | None = None
    extra_replica_args: list[str] = field(default_factory=list)
    # Keys given as they are (--api-key, KINGPOST_API_KEYS; every scope), beside the
    # store's; and whether a non-loopback --host may go without any key.
    api_keys: tuple[str, ...] = ()
    insecure_no_keys: bool = False
    # Per key (a key's own rate or concurrency wins), and per model over all callers.
    key_quota: Quota = field(default_factory=Quota)
    model_quotas: dict[str, Quota] = field(default_factory=dict)
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_certfile is not None else "http"

    @property
    def database_url(self) -> str:
        if self.state_url:
            url = self.state_url
            # psycopg 3 is the driver we ship with; a bare postgresql:// means it.
            if url.startswith("postgresql://"):
                url = "postgresql+psycopg://" + url[len("postgresql://") :]
            elif url.startswith("postgres://"):
                url = "postgresql+psycopg://" + url[len("postgres://") :]
            return url
        return f"sqlite:///{self.home / 'state.db'}"

    @property
    def shared(self) -> bool:
        """Whether other platform processes may share the state (not SQLite under home)."""
        return bool(self.state_url) and not self.database_url.startswith("sqlite")
