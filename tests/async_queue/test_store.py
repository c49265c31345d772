"""The queue table's state changes, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kingpost.async_queue.models import Status, WebhookStatus
from kingpost.async_queue.store import AsyncStore, NewRequest, Outcome, new_request_id

LEASE = 10.0


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AsyncStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'queue.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    store = AsyncStore(url)
    yield store
    store.close()


@pytest.fixture
def queue() -> str:
    return f"model/{uuid.uuid4().hex[:8]}"


def new(
    queue: str,
    priority: int = 0,
    at: float = 100.0,
    webhook: str | None = None,
    max_attempts: int = 3,
    wait: float = 600.0,
) -> NewRequest:
    return NewRequest(
        id=uuid.uuid4().hex,
        queue=queue,
        model_id="m",
        deployment_id="d",
        priority=priority,
        webhook_endpoint=webhook,
        model_input=b'{"x":1}',
        created_at=at,
        expires_at=at + wait,
        max_attempts=max_attempts,
        initial_delay_ms=1000,
        max_delay_ms=5000,
    )


def test_claims_take_the_lowest_priority_then_the_oldest(store: AsyncStore, queue: str) -> None:
    items = [new(queue, 2, 100), new(queue, 0, 101), new(queue, 1, 102), new(queue, 0, 103)]
    store.submit(items)
    claimed = [c.id for c in store.claim(queue, "w", 10, 200.0, LEASE)]
    assert claimed == [items[1].id, items[3].id, items[2].id, items[0].id]


def test_a_claimed_request_is_not_claimed_again_while_its_lease_holds(
    store: AsyncStore, queue: str
) -> None:
    store.submit([new(queue)])
    assert len(store.claim(queue, "a", 5, 200.0, LEASE)) == 1
    assert store.claim(queue, "b", 5, 201.0, LEASE) == []
    assert store.counts(queue) == (0, 1)


def test_claims_see_only_their_own_queue(store: AsyncStore, queue: str) -> None:
    store.submit([new(queue), new(queue + "-other")])
    assert len(store.claim(queue, "w", 5, 200.0, LEASE)) == 1
    assert store.counts(queue) == (0, 1)
    assert store.counts(queue + "-other") == (1, 0)


def test_an_outcome_from_a_lost_lease_is_refused(store: AsyncStore, queue: str) -> None:
    store.submit([new(queue)])
    (first,) = store.claim(queue, "a", 1, 200.0, LEASE)
    assert store.release_lost(queue, 200.0 + LEASE + 1, "gone") == 1
    (second,) = store.claim(queue, "b", 1, 220.0, LEASE)
    assert second.attempt == 2
    assert not store.succeed(first, b'"late"', 221.0)
    assert store.succeed(second, b'"on time"', 222.0)
    found = store.get(first.id)
    assert found is not None and found.status is Status.SUCCEEDED
    assert found.output == b'"on time"'


def test_renewing_keeps_the_lease(store: AsyncStore, queue: str) -> None:
    store.submit([new(queue)])
    (claim,) = store.claim(queue, "a", 1, 200.0, LEASE)
    assert store.renew("a", [claim.id], 205.0, LEASE) == {claim.id}
    assert store.release_lost(queue, 212.0, "gone") == 0  # renewed until 215
    assert store.renew("b", [claim.id], 213.0, LEASE) == set()


def test_a_lost_lease_on_the_last_attempt_fails_the_request(store: AsyncStore, queue: str) -> None:
    item = new(queue, max_attempts=1)
    store.submit([item])
    store.claim(queue, "a", 1, 200.0, LEASE)
    store.release_lost(queue, 300.0, "the worker stopped")
    found = store.get(item.id)
    assert found is not None and found.status is Status.FAILED
    assert found.errors == [{"code": "WORKER_LOST", "message": "the worker stopped"}]


def test_a_retry_waits_until_its_time(store: AsyncStore, queue: str) -> None:
    store.submit([new(queue)])
    (claim,) = store.claim(queue, "a", 1, 200.0, LEASE)
    error = {"code": "MODEL_NOT_READY", "message": "503"}
    assert store.retry(claim, error, 205.0, 201.0)
    assert store.claim(queue, "a", 1, 204.0, LEASE) == []
    (again,) = store.claim(queue, "a", 1, 205.0, LEASE)
    assert again.attempt == 2
    found = store.get(claim.id)
    assert found is not None and found.errors == [error]


def test_given_back_work_does_not_count_an_attempt(store: AsyncStore, queue: str) -> None:
    store.submit([new(queue)])
    (claim,) = store.claim(queue, "a", 1, 200.0, LEASE)
    assert store.give_back([claim], 201.0) == 1
    (again,) = store.claim(queue, "b", 1, 202.0, LEASE)
    assert again.attempt == 1


def test_only_never_started_requests_expire(store: AsyncStore, queue: str) -> None:
    waiting, retried = new(queue, wait=10), new(queue, at=99, wait=10)
    store.submit([retried, waiting])
    (claim,) = store.claim(queue, "a", 1, 100.0, LEASE)
    assert claim.id == retried.id
    store.retry(claim, {"code": "MODEL_NOT_READY", "message": "x"}, 500.0, 101.0)
    assert store.expire_due(queue, 150.0) == 1
    expired, requeued = store.get(waiting.id), store.get(retried.id)
    assert expired is not None and expired.status is Status.EXPIRED
    assert expired.errors[0]["code"] == "EXPIRED_IN_QUEUE"
    assert requeued is not None and requeued.status is Status.QUEUED


def test_cancel_only_while_queued(store: AsyncStore, queue: str) -> None:
    queued, running = new(queue, 1, webhook="http://127.0.0.1:9/x"), new(queue, 0)
    store.submit([queued, running])
    store.claim(queue, "a", 1, 200.0, LEASE)
    assert store.cancel(queued.id, 201.0) is Status.QUEUED
    assert store.cancel(running.id, 201.0) is Status.IN_PROGRESS
    assert store.cancel("nope", 201.0) is None
    found = store.get(queued.id)
    assert found is not None and found.status is Status.CANCELED
    assert found.webhook_status is WebhookStatus.CANCELED


def test_webhooks_are_claimed_once_finished_and_settle(store: AsyncStore, queue: str) -> None:
    item = new(queue, webhook="http://127.0.0.1:9/hook")
    store.submit([item])
    assert store.claim_webhooks("a", 5, 200.0, LEASE, queue) == []
    (claim,) = store.claim(queue, "a", 1, 200.0, LEASE)
    store.succeed(claim, b'{"y":2}', 201.0, keep_output=False)
    (job,) = store.claim_webhooks("a", 5, 202.0, LEASE, queue)
    assert (job.output, job.status, job.attempt) == (b'{"y":2}', Status.SUCCEEDED, 1)
    assert store.claim_webhooks("b", 5, 203.0, LEASE, queue) == []  # leased to "a"
    assert store.webhook_retry(job, 210.0)
    assert store.claim_webhooks("b", 5, 209.0, LEASE, queue) == []
    (again,) = store.claim_webhooks("b", 5, 210.0, LEASE, queue)
    assert not store.webhook_done(job, True, 211.0, keep_output=False)  # a stale attempt
    assert store.webhook_done(again, False, 211.0, keep_output=False)
    found = store.get(item.id)
    assert found is not None
    assert (found.status, found.webhook_status) == (Status.WEBHOOK_FAILED, WebhookStatus.FAILED)
    assert found.output is None  # keep_outputs: false drops it once the webhook settled


def test_purge_deletes_settled_requests_past_retention(store: AsyncStore, queue: str) -> None:
    done, waiting = new(queue), new(queue, 1)
    store.submit([done, waiting])
    (claim,) = store.claim(queue, "a", 1, 200.0, LEASE)
    store.succeed(claim, b"1", 201.0)
    assert store.purge(queue, 201.0) == 0
    assert store.purge(queue, 202.0) == 1
    assert store.get(done.id) is None
    assert store.get(waiting.id) is not None


FORMER_INDEXES = {
    "kingpost_async_claim": "queue, status, priority, seq",
    "kingpost_async_expiry": "queue, status, expires_at",
    "kingpost_async_webhooks": "webhook_status, webhook_next_at",
    "kingpost_async_settled": "settled_at",
}
PARTIAL_INDEXES = {
    "kingpost_async_queued",
    "kingpost_async_expiring",
    "kingpost_async_leased",
    "kingpost_async_webhooks_due",
    "kingpost_async_settled_at",
}


def _indexes(path: Path) -> dict[str, str | None]:
    """The named (not automatic) indexes of the SQLite file, with their SQL."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows = db.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        ).fetchall()
    return dict(rows)


def test_a_database_with_the_former_indexes_opens_keeps_its_rows_and_gets_the_partial_ones(
    tmp_path: Path, queue: str
) -> None:
    path = tmp_path / "former.db"
    first = AsyncStore(f"sqlite:///{path}")
    items = [new(queue, 2, 100), new(queue, 0, 101), new(queue, 1, 102), new(queue, 0, 103)]
    first.submit(items)
    first.close()
    # The file as the previous schema left it: its four full indexes, none of the partial.
    with contextlib.closing(sqlite3.connect(path)) as db:
        for name in PARTIAL_INDEXES:
            db.execute(f"DROP INDEX {name}")
        for name, columns in FORMER_INDEXES.items():
            db.execute(f"CREATE INDEX {name} ON kingpost_async_requests ({columns})")
        db.commit()
    assert set(_indexes(path)) == set(FORMER_INDEXES)

    store = AsyncStore(f"sqlite:///{path}")
    try:
        indexes = _indexes(path)
        assert set(indexes) == PARTIAL_INDEXES
        assert all(" WHERE " in (sql or "").upper() for sql in indexes.values())
        assert store.counts(queue) == (4, 0)
        claimed = [claim.id for claim in store.claim(queue, "w", 10, 200.0, LEASE)]
        assert claimed == [items[1].id, items[3].id, items[2].id, items[0].id]
        assert store.counts(queue) == (0, 4)
    finally:
        store.close()


def test_request_ids_are_uuid7_hex_that_sort_by_creation_time() -> None:
    ids = []
    for _ in range(5):
        ids.append(new_request_id())
        deadline = time.monotonic() + 1.0
        stamp = time.time_ns() // 1_000_000
        while time.time_ns() // 1_000_000 == stamp and time.monotonic() < deadline:
            pass  # the next id in the next millisecond
    for request_id in ids:
        assert re.fullmatch(r"[0-9a-f]{32}", request_id)
        parsed = uuid.UUID(hex=request_id)
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    # The first 48 bits are the creation time in milliseconds since the epoch.
    millis = int(ids[-1][:12], 16)
    assert abs(millis - time.time_ns() // 1_000_000) < 60_000
    many = [new_request_id() for _ in range(1000)]
    assert len(set(many)) == len(many)
    assert [int(i[:12], 16) for i in many] == sorted(int(i[:12], 16) for i in many)


@pytest.fixture
def counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[AsyncStore, list[int]]]:
    """A SQLite store, and how many hot write transactions it has begun."""
    store = AsyncStore(f"sqlite:///{tmp_path / 'turn.db'}")
    writer = store._writer
    assert writer is not None
    begun = [0]
    transaction = writer.transaction

    @contextlib.contextmanager
    def counting() -> Iterator[Any]:
        begun[0] += 1
        with transaction() as inner:
            yield inner

    monkeypatch.setattr(writer, "transaction", counting)
    yield store, begun
    store.close()


async def test_one_loop_turn_s_submissions_and_claims_share_one_transaction(
    counted: tuple[AsyncStore, list[int]], queue: str
) -> None:
    store, begun = counted
    first, second = new(queue, priority=1), new(queue, priority=0)
    _, _, claims = await asyncio.gather(
        store.add(first),
        store.add(second),
        store.exchange_soon(queue, "w", [], 10, 200.0, LEASE),
    )
    assert begun[0] == 1
    # The inserts come first in the transaction: the claim sees them, best first.
    assert [claim.id for claim in claims] == [second.id, first.id]

    outcome = Outcome(claims[0], "succeeded", output=b"{}")
    assert await store.exchange_soon(queue, "w", [outcome], 10, 201.0, LEASE) == []
    assert begun[0] == 2  # alone, at once
    assert store.get(second.id).status is Status.SUCCEEDED  # type: ignore[union-attr]


async def test_a_failing_part_of_a_shared_transaction_fails_only_its_own_callers(
    counted: tuple[AsyncStore, list[int]], queue: str
) -> None:
    store, _ = counted
    kept = new(queue)
    await store.add(kept)
    duplicate, other = new(queue), new(queue)
    duplicate = dataclasses.replace(duplicate, id=kept.id)
    results = await asyncio.gather(
        store.add(duplicate),
        store.exchange_soon(queue, "w", [], 10, 200.0, LEASE),
        return_exceptions=True,
    )
    assert isinstance(results[0], sqlite3.IntegrityError)
    assert [claim.id for claim in results[1]] == [kept.id]  # type: ignore[union-attr]
    await store.add(other)
    assert store.counts(queue) == (1, 1)
