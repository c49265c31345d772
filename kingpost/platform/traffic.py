"""Where an environment's requests go: one pool, or two while a rolling promotion runs.

Swapping an environment's ``Traffic`` is one assignment on the event loop, so
a switch is atomic: every request resolved before it goes to the old pool,
every one after it to the new.
"""

from __future__ import annotations

import random

from kingpost.platform.pool import ReplicaPool


class Traffic:
    __slots__ = ("candidate", "primary", "share")

    def __init__(self, primary: ReplicaPool) -> None:
        self.primary = primary
        self.candidate: ReplicaPool | None = None
        self.share = 0.0  # of requests that go to the candidate

    def choose(self) -> ReplicaPool:
        candidate = self.candidate
        if candidate is not None and random.random() < self.share:
            return candidate
        return self.primary

    @property
    def deployment_id(self) -> str:
        return self.primary.key[0]
