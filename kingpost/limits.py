"""Per-caller quotas (a request rate and a number at once), and a bounded wait for a slot.

Past either, the request is refused at once with TooManyRequestsError (429) and a
``Retry-After`` in whole seconds; nothing queues. State is one small object per
key id, and key ids come from the key store, so memory stays bounded.

    quotas = Quotas(default=Quota(rate=10, burst=20, concurrency=4))
    with quotas.admit("3k9x2mq7aa", None):     # raises TooManyRequestsError
        ...
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Literal

from kingpost.errors import OverloadedError, TooManyRequestsError

DEFAULT_MAX_QUEUE = 64


@dataclass(frozen=True)
class Quota:
    """``rate`` requests per second with bursts of ``burst``; ``concurrency`` at once.

    None means unlimited. ``burst`` defaults to one second's worth (at least 1).
    """

    rate: float | None = None
    burst: float | None = None
    concurrency: int | None = None

    def __post_init__(self) -> None:
        if self.rate is not None and self.rate <= 0:
            raise ValueError("a rate quota must be above 0 requests per second")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError("a concurrency quota must be at least 1")

    @property
    def capacity(self) -> float:
        if self.burst is not None:
            return max(1.0, self.burst)
        return max(1.0, self.rate or 1.0)

    @property
    def limited(self) -> bool:
        return self.rate is not None or self.concurrency is not None


class _Usage:
    __slots__ = ("active", "stamp", "tokens")

    def __init__(self, tokens: float) -> None:
        self.tokens = tokens
        self.stamp = time.monotonic()
        self.active = 0


class Admission:
    """``with`` block of one admitted request: holds its concurrency place until exit."""

    __slots__ = ("_usage",)

    def __init__(self, usage: _Usage | None) -> None:
        self._usage = usage

    def __enter__(self) -> Admission:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def release(self) -> None:
        usage, self._usage = self._usage, None
        if usage is not None:
            usage.active -= 1


_UNLIMITED = Admission(None)


class Quotas:
    """Quota bookkeeping for every caller of one server (event-loop thread only)."""

    def __init__(self, default: Quota | None = None, subject: str = "this API key") -> None:
        self.default = default or Quota()
        self.subject = subject  # who the refusal speaks of
        self._usage: dict[str, _Usage] = {}

    def admit(self, caller: str, quota: Quota | None) -> Admission:
        """Count one request of ``caller`` against ``quota`` (None: the default)."""
        quota = quota or self.default
        if not quota.limited:
            return _UNLIMITED
        usage = self._usage.get(caller)
        if usage is None:
            usage = self._usage[caller] = _Usage(quota.capacity)
        if quota.concurrency is not None and usage.active >= quota.concurrency:
            raise TooManyRequestsError(
                f"too many requests at once for {self.subject} (limit {quota.concurrency})", 1
            )
        if quota.rate is not None:
            now = time.monotonic()
            usage.tokens = min(quota.capacity, usage.tokens + (now - usage.stamp) * quota.rate)
            usage.stamp = now
            if usage.tokens < 1:
                wait = (1 - usage.tokens) / quota.rate
                raise TooManyRequestsError(
                    f"rate limit of {quota.rate:g} requests per second exceeded for {self.subject}",
                    wait,
                )
            usage.tokens -= 1
        usage.active += 1
        return Admission(usage)

    def active(self, caller: str) -> int:
        usage = self._usage.get(caller)
        return usage.active if usage is not None else 0


class BoundedSlots(asyncio.Semaphore):
    """A semaphore of model slots with at most ``max_queue`` requests waiting for one.

    ``acquire_queued`` is how a request that found every slot busy waits: past
    ``max_queue`` waiters it raises OverloadedError at once, so the wait, and the
    memory waiting requests hold, stay bounded however many clients come. A free
    slot is taken with the plain ``acquire`` (the hot path pays nothing extra).

        slots = BoundedSlots(4, max_queue=64)
        await (slots.acquire() if not slots.locked() else slots.acquire_queued())
    """

    def __init__(self, value: int, max_queue: int = DEFAULT_MAX_QUEUE) -> None:
        super().__init__(value)
        if max_queue < 0:
            raise ValueError("max_queue must be 0 or more")
        self.max_queue = max_queue
        self.capacity = value
        self.waiting = 0
        self._watchers: list[asyncio.Future[None]] = []

    @property
    def free(self) -> int:
        """Slots nobody holds now."""
        return self._value

    def release(self) -> None:
        super().release()
        if self._watchers:
            watchers, self._watchers = self._watchers, []
            for watcher in watchers:
                if not watcher.done():
                    watcher.set_result(None)

    async def released(self) -> None:
        """Until a slot is released next (how a waiting yielder learns it may ask again)."""
        watcher: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._watchers.append(watcher)
        await watcher

    async def acquire_queued(self) -> Literal[True]:
        if self.locked() and self.waiting >= self.max_queue:
            raise OverloadedError(
                f"the model is at capacity and {self.waiting} requests wait already "
                f"(runtime.max_queue); retry later"
            )
        self.waiting += 1
        try:
            return await super().acquire()
        finally:
            self.waiting -= 1
