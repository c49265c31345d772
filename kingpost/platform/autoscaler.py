"""The autoscaling decision of PLATFORM.md, with no I/O: samples in, a replica count out.

In-flight requests (parked ones included) are averaged over
``autoscaling_window``; the wanted count is ``ceil(average / (concurrency_target
x utilisation))`` within ``[min_replica, max_replica]``. Going up applies at
once; going down waits until low load has lasted ``scale_down_delay``, removes
half the excess, and waits again.

    scaler = Autoscaler(Autoscaling(max_replica=4, autoscaling_window=10))
    scaler.observe(now, in_flight=3)
    scaler.decide(now, current=1)      # 4: ceil(3 / 0.7), capped at max_replica
"""

from __future__ import annotations

import math
from collections import deque

from kingpost.platform.settings import Autoscaling


class Autoscaler:
    def __init__(self, settings: Autoscaling) -> None:
        self.settings = settings
        self.samples: deque[tuple[float, int]] = deque()
        self._total = 0
        self.low_since: float | None = None
        # Bounds laid over the settings while a promotion moves traffic (None: the settings').
        self.floor: int | None = None
        self.ceiling: int | None = None

    def configure(self, settings: Autoscaling) -> None:
        self.settings = settings
        self.low_since = None

    def observe(self, now: float, in_flight: int) -> None:
        samples = self.samples
        samples.append((now, in_flight))
        self._total += in_flight
        horizon = now - self.settings.autoscaling_window
        while samples and samples[0][0] < horizon:
            self._total -= samples.popleft()[1]

    @property
    def average(self) -> float:
        return self._total / len(self.samples) if self.samples else 0.0

    def bounds(self) -> tuple[int, int]:
        low, high = self.settings.min_replica, self.settings.max_replica
        if self.floor is not None:
            low = max(low, self.floor)
        if self.ceiling is not None:
            high = min(high, self.ceiling)
        return min(low, high), high

    def wanted(self) -> int:
        """The count the current average asks for, within the bounds."""
        low, high = self.bounds()
        needed = math.ceil(self.average / self.settings.per_replica - 1e-9)
        return max(low, min(high, needed))

    def decide(self, now: float, current: int) -> int:
        """The replica count to run from now on, given ``current``."""
        wanted = self.wanted()
        low, high = self.bounds()
        if current < low or wanted > current:
            self.low_since = None
            return max(wanted, low)
        if current > high:
            self.low_since = None
            return high
        if wanted == current:
            self.low_since = None
            return current
        if self.low_since is None:
            self.low_since = now
            return current
        if now - self.low_since < self.settings.scale_down_delay:
            return current
        self.low_since = now  # the next step down waits a full delay again
        return current - math.ceil((current - wanted) / 2)

    def hold(self, now: float) -> None:
        """Count from ``now`` before any scale-down (a wake, a new replica)."""
        self.low_since = now
