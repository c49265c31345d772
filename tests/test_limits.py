"""Per-key quotas: a token bucket and a count at once, refused with a Retry-After."""

from __future__ import annotations

import asyncio

import pytest

from kingpost.limits import BoundedSlots, OverloadedError, Quota, Quotas, TooManyRequestsError


def test_a_rate_quota_allows_its_burst_then_asks_to_retry() -> None:
    quotas = Quotas(Quota(rate=0.5, burst=2))
    for _ in range(2):
        quotas.admit("k", None).release()
    with pytest.raises(TooManyRequestsError) as refused:
        quotas.admit("k", None)
    assert refused.value.status_code == 429 and 1 <= refused.value.retry_after <= 2
    quotas.admit("other", None).release()  # each key has its own bucket


def test_a_concurrency_quota_counts_requests_until_they_end() -> None:
    quotas = Quotas()
    quota = Quota(concurrency=1)
    with quotas.admit("k", quota):
        assert quotas.active("k") == 1
        with pytest.raises(TooManyRequestsError, match="at once"):
            quotas.admit("k", quota)
    assert quotas.active("k") == 0
    quotas.admit("k", quota).release()


def test_no_quota_means_no_bookkeeping() -> None:
    quotas = Quotas()
    for _ in range(100):
        quotas.admit("k", None).release()
    assert quotas.active("k") == 0


def test_a_quota_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Quota(rate=0)
    with pytest.raises(ValueError):
        Quota(concurrency=0)


async def test_bounded_slots_refuse_past_the_queue_and_serve_the_queued() -> None:
    slots = BoundedSlots(1, max_queue=2)
    await slots.acquire()
    queued = [asyncio.create_task(slots.acquire_queued()) for _ in range(2)]
    await asyncio.sleep(0)
    assert slots.waiting == 2
    with pytest.raises(OverloadedError) as refused:
        await slots.acquire_queued()
    assert refused.value.status_code == 503 and refused.value.retry_after >= 1
    for _ in queued:
        slots.release()
    await asyncio.wait_for(asyncio.gather(*queued), 5)
    assert slots.waiting == 0


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    slots = BoundedSlots(1, max_queue=1)
    await slots.acquire()
    waiter = asyncio.create_task(slots.acquire_queued())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert slots.waiting == 0
    slots.release()
    async with slots:
        assert slots.locked()
