"""Sync traffic first: when async work may take one of the model's slots.

A model has ``slots`` (``predict_concurrency``). Async work starts only if a
slot is free beyond those sync requests hold or wait for, and, while sync
traffic is active (in flight, or seen within ``quiet_seconds``), it leaves one
slot free for the next sync request. So async work never takes the last slot
from sync requests; on an idle server it uses them all.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class SyncFirst:
    """The worker's ``Admission`` for one model; the server calls ``enter``/``leave``
    around each sync request that needs a slot."""

    def __init__(
        self,
        slots: int,
        ready: Callable[[], bool] = lambda: True,
        quiet_seconds: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.slots = slots
        self.ready = ready
        self.quiet_seconds = quiet_seconds
        self.clock = clock
        self.sync_in_flight = 0
        self._last_sync = -1e9
        self._changed = asyncio.Event()

    def enter(self) -> None:
        self.sync_in_flight += 1

    def leave(self) -> None:
        self.sync_in_flight -= 1
        self._last_sync = self.clock()
        self._changed.set()

    def may_start(self, async_running: int) -> bool:
        if not self.ready():
            return False
        free = self.slots - self.sync_in_flight - async_running
        sync_active = self.sync_in_flight > 0 or self.clock() - self._last_sync < self.quiet_seconds
        reserve = 1 if sync_active and self.slots > 1 else 0
        return free > reserve

    async def changed(self) -> None:
        self._changed.clear()
        await self._changed.wait()
