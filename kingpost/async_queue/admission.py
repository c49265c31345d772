"""Sync traffic first: when async work may take one of the model's slots.

The model's slots are the core's own (``BoundedSlots``, ``predict_concurrency``
of them), which sync and async requests both take on their way through
``/predict``. Async work starts only if a slot is free beyond those sync
requests wait for, and, while sync traffic is active (holding or waiting for a
slot, or seen within ``quiet_seconds``), it leaves one slot free for the next
sync request. So async work never takes the last slot from sync requests; on
an idle server it uses them all.

    admission = SyncFirst(lambda: service.hooks["predict"].slot, ready=lambda: loaded)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from kingpost.limits import BoundedSlots


class SyncFirst:
    """The worker's ``Admission`` for one model, reading the slots the core holds.

    ``slots`` returns the model's slots (None until it has loaded); ``async_running``
    passed to ``may_start`` is how many the worker has started, some of which may
    not hold their slot yet.
    """

    def __init__(
        self,
        slots: Callable[[], BoundedSlots | None],
        ready: Callable[[], bool] = lambda: True,
        quiet_seconds: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.slots = slots
        self.ready = ready
        self.quiet_seconds = quiet_seconds
        self.clock = clock
        self._last_sync = -1e9

    def may_start(self, async_running: int) -> bool:
        slots = self.slots()
        if slots is None or not self.ready():
            return False
        capacity = slots.capacity
        held = capacity - slots.free
        sync_held = max(0, held - async_running)
        if sync_held > 0 or slots.waiting > 0:
            self._last_sync = self.clock()
        free = capacity - sync_held - async_running - slots.waiting
        sync_active = self.clock() - self._last_sync < self.quiet_seconds
        reserve = 1 if sync_active and capacity > 1 else 0
        return free > reserve

    async def changed(self) -> None:
        slots = self.slots()
        if slots is None:
            await asyncio.sleep(self.quiet_seconds)  # not loaded: asked again after a while
        else:
            await slots.released()
