"""How many threads llama.cpp decodes with, when other processes want the cores too.

llama.cpp splits every operation of a decode step across its threads and waits at a
spinning barrier after each one, so a step is as slow as its slowest thread. When
another busy process takes a core, one of the threads gets only part of it, and the
others spin at every barrier waiting for it: on 2 cores, one neighbour's busy loop made
decoding 2-3 times slower most of the time and 30-60 times slower now and then.

:class:`ThreadGovernor` watches how many cores the process actually got during the
decode steps (CPU time over wall time: the threads spin while they wait, so with every
core to itself the process uses as many as it has threads). When that falls short by
more than half a core, it decodes with the cores it got (at least one thread, so no
barrier waits on a thread that is not running), and tries all of them again after a
while, waiting twice as long after each try that finds the cores still taken.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

WINDOW_S = 0.25
"""Decode time each judgement is made over."""
FIRST_RETRY_S = 2.0
LAST_RETRY_S = 32.0


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, where the OS has one: a
    cpuset or ``taskset`` can give it fewer than the machine has)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


@dataclass
class ThreadGovernor:
    """The thread count to decode with, from each step's wall and CPU time."""

    full: int
    """The threads the engine was set up with."""
    threads: int = field(init=False)
    fallbacks: int = 0
    """How many times it went below ``full``."""
    _wall: float = 0.0
    _cpu: float = 0.0
    _retry_after: float = FIRST_RETRY_S
    _retry_at: float = 0.0
    _trying: bool = False

    def __post_init__(self) -> None:
        self.threads = self.full

    def observe(self, wall: float, cpu: float, now: float) -> int | None:
        """Take one decode step's wall and process CPU seconds, ending at ``now``; the
        thread count to use from the next step on, when it changes."""
        if self.full <= 1:
            return None
        if self.threads < self.full:
            if now < self._retry_at:
                return None
            self._trying, self._wall, self._cpu = True, 0.0, 0.0
            self.threads = self.full
            return self.full
        self._wall += wall
        self._cpu += cpu
        if self._wall < WINDOW_S:
            return None
        cores = self._cpu / self._wall
        self._wall = self._cpu = 0.0
        if cores >= self.full - 0.5:
            if self._trying:
                self._trying, self._retry_after = False, FIRST_RETRY_S
            return None
        if self._trying:
            self._retry_after = min(self._retry_after * 2, LAST_RETRY_S)
        self._trying = False
        self._retry_at = now + self._retry_after
        self.threads = max(1, min(self.full - 1, int(cores + 0.25)))
        self.fallbacks += 1
        return self.threads
