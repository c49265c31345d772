"""The decode thread count following the cores the process actually gets."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from kingpost.engines.llama_cpp_threads import (
    FIRST_RETRY_S,
    LAST_RETRY_S,
    WINDOW_S,
    ThreadGovernor,
    available_cores,
)

STEP = 0.01


class Clock:
    """Feeds a governor decode steps of ``STEP`` seconds that got ``cores`` cores."""

    def __init__(self, governor: ThreadGovernor) -> None:
        self.governor = governor
        self.now = 0.0

    def steps(self, seconds: float, cores: float) -> list[int]:
        """Decode for ``seconds``; the thread counts the governor switched to."""
        changes = []
        for _ in range(round(seconds / STEP)):
            self.now += STEP
            change = self.governor.observe(STEP, STEP * cores, self.now)
            if change is not None:
                changes.append(change)
        return changes


def test_all_threads_stay_while_they_get_every_core() -> None:
    clock = Clock(ThreadGovernor(2))
    assert clock.steps(10, cores=2.0) == []
    assert clock.steps(10, cores=1.6) == []  # within half a core: noise, not a neighbour
    assert clock.governor.threads == 2 and clock.governor.fallbacks == 0


def test_a_core_taken_by_another_process_drops_a_thread_within_a_window() -> None:
    clock = Clock(ThreadGovernor(2))
    assert clock.steps(WINDOW_S + STEP, cores=1.3) == [1]
    assert clock.governor.threads == 1 and clock.governor.fallbacks == 1


def test_the_cores_are_tried_again_later_and_kept_once_free() -> None:
    clock = Clock(ThreadGovernor(2))
    clock.steps(WINDOW_S + STEP, cores=1.3)
    assert clock.steps(FIRST_RETRY_S - 2 * STEP, cores=1.0) == []  # not yet
    assert clock.steps(2 * STEP, cores=1.0) == [2]  # the retry
    assert clock.steps(10, cores=2.0) == []  # the neighbour has gone: all threads stay
    assert clock.governor.threads == 2


def test_each_retry_that_finds_the_cores_taken_waits_twice_as_long() -> None:
    clock = Clock(ThreadGovernor(2))
    clock.steps(WINDOW_S + STEP, cores=1.3)
    waits = []
    for _ in range(7):
        dropped_at = clock.now
        changes: list[int] = []
        while changes != [2]:
            changes = clock.steps(STEP, cores=1.0)
        waits.append(round(clock.now - dropped_at))
        assert clock.steps(WINDOW_S + STEP, cores=1.3) == [1]
    assert waits == [2, 4, 8, 16, 32, 32, 32]
    assert waits[-1] == LAST_RETRY_S


def test_a_retry_that_succeeds_starts_the_waits_over() -> None:
    clock = Clock(ThreadGovernor(2))
    clock.steps(WINDOW_S + STEP, cores=1.3)
    clock.steps(FIRST_RETRY_S, cores=1.0)  # retried
    clock.steps(WINDOW_S + STEP, cores=1.3)  # still taken: the next wait doubles
    clock.steps(2 * FIRST_RETRY_S, cores=1.0)  # retried
    clock.steps(WINDOW_S + STEP, cores=2.0)  # free now
    dropped_at = clock.now
    assert clock.steps(WINDOW_S + STEP, cores=1.3) == [1]
    assert clock.steps(FIRST_RETRY_S, cores=1.0) == [2]
    assert round(clock.now - dropped_at) == FIRST_RETRY_S


def test_many_threads_keep_as_many_as_the_cores_they_got() -> None:
    clock = Clock(ThreadGovernor(16))
    assert clock.steps(WINDOW_S + STEP, cores=12.1) == [12]


def test_one_thread_has_nothing_to_give_up() -> None:
    clock = Clock(ThreadGovernor(1))
    assert clock.steps(10, cores=0.3) == []


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity here")
def test_the_thread_count_follows_the_cores_the_process_may_use() -> None:
    """A process held to one core (a cpuset, ``taskset``) decodes with one thread, not
    with as many as the machine has."""
    script = (
        "import os\n"
        "os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
        "from kingpost.engines.llama_cpp_threads import available_cores\n"
        "print(available_cores())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "1"
    assert available_cores() == len(os.sched_getaffinity(0))
