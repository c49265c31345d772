"""The graceful drain: count the requests doing work, refuse new ones, wait for zero.

One ``Drain`` serves a whole process (every generation of a ``--watch``
server shares it). Route handlers wrap their model work in it; ``kingpost.serve``
starts it on SIGTERM and waits:

    with drain:                    # counts the request while its work runs
        await run_the_model()
    drain.start()                  # from now on check() raises NotReadyError (503)
    await drain.wait(timeout=30)   # returns once nothing is in flight, or at the timeout
"""

from __future__ import annotations

import asyncio
import contextlib

from kingpost.errors import NotReadyError


class Drain:
    __slots__ = ("_idle", "draining", "in_flight")

    def __init__(self) -> None:
        self.draining = False
        self.in_flight = 0
        self._idle: asyncio.Event | None = None

    def __enter__(self) -> None:
        self.in_flight += 1

    def __exit__(self, *exc_info: object) -> None:
        self.in_flight -= 1
        if self.in_flight == 0 and self._idle is not None:
            self._idle.set()

    def check(self) -> None:
        """NotReadyError (503) once the drain has started."""
        if self.draining:
            raise NotReadyError("the server is shutting down")

    def start(self) -> None:
        self.draining = True

    async def wait(self, timeout: float) -> None:
        """Return once no request is in flight, or after ``timeout`` seconds."""
        if self.in_flight == 0:
            return
        self._idle = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)
