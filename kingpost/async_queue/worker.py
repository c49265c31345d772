"""The worker: claims queued requests, runs them through an ``Invoke``, records outcomes,
delivers webhooks.

Three loops in one event loop:

- claim: take the best waiting requests while a slot is free (and the
  ``Admission`` lets async work in), run each, record success, a retry after
  back-off, or failure;
- upkeep: renew this worker's leases (a request whose lease was taken over is
  stopped), give back leases of dead workers, expire requests that waited too
  long, purge settled requests past their retention;
- webhooks: deliver finished requests' payloads, retrying with back-off.

    worker = AsyncWorker(store, invoke, sender, WorkerSettings(queue="model", concurrency=2))
    await worker.start()
    ...
    await worker.stop()
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from kingpost.async_queue.invoke import Invoke, InvokeFailure
from kingpost.async_queue.policy import backoff_seconds, classify
from kingpost.async_queue.store import AsyncStore, Claim, Outcome, WebhookJob
from kingpost.async_queue.webhooks import WebhookSender

if TYPE_CHECKING:
    from kingpost.config import AsyncQueueConfig

logger = logging.getLogger("kingpost.async")

MAX_FAILED_TURNS = 20  # in a row, before outcomes are left to their leases
LOOKAHEAD_SECONDS = 0.02  # claimed ahead of the free slots, in work time
MAX_LOOKAHEAD = 64
BATCH_OUTCOMES = 32  # outcomes recorded at once at most before a round trip is forced
BATCH_WAIT = 0.002  # seconds an outcome waits to share a round trip


class Admission(Protocol):
    """Whether async work may start one more request now.

    Sync traffic comes first: an admission for a model with N slots says no
    when starting would take the last free slot while sync requests wait.
    ``changed`` is awaited when it said no; it returns when asking again may help.
    """

    def may_start(self, async_running: int) -> bool: ...

    async def changed(self) -> None: ...


class OpenAdmission:
    """Admits everything (the worker's own concurrency is the only bound)."""

    def may_start(self, async_running: int) -> bool:
        return True

    async def changed(self) -> None:
        await asyncio.sleep(3600)


@dataclass(frozen=True)
class WorkerSettings:
    queue: str
    concurrency: int = 1
    lease_seconds: float = 30.0
    poll_interval: float = 0.5
    keep_outputs: bool = True
    retention_seconds: float = 3600.0
    webhook_concurrency: int = 8
    webhook_max_attempts: int = 5
    webhook_initial_delay_ms: int = 1000
    webhook_max_delay_ms: int = 30_000
    webhook_lease_seconds: float = 30.0  # renewed while a delivery is under way
    purge_interval: float = 60.0

    @classmethod
    def from_config(cls, config: AsyncQueueConfig, queue: str, concurrency: int) -> WorkerSettings:
        """The settings of ``config.async_queue`` for one queue's worker."""
        return cls(
            queue=queue,
            concurrency=config.concurrency or concurrency,
            lease_seconds=config.lease_seconds,
            poll_interval=config.poll_interval_seconds,
            keep_outputs=config.keep_outputs,
            retention_seconds=config.result_retention_seconds,
            webhook_max_attempts=config.webhook_max_attempts,
            webhook_initial_delay_ms=config.webhook_initial_delay_ms,
            webhook_max_delay_ms=config.webhook_max_delay_ms,
            webhook_lease_seconds=config.lease_seconds,
        )


class AsyncWorker:
    """Runs one queue's requests; several workers (processes) may share a store."""

    def __init__(
        self,
        store: AsyncStore,
        invoke: Invoke,
        sender: WebhookSender,
        settings: WorkerSettings,
        admission: Admission | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.invoke = invoke
        self.sender = sender
        self.settings = settings
        self.admission = admission or OpenAdmission()
        self.clock = clock
        self.owner = uuid.uuid4().hex
        self.running: dict[str, tuple[Claim, asyncio.Event]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._work = asyncio.Event()
        self._webhooks = asyncio.Event()
        self._delivering: set[str] = set()
        self._stopping = False  # no new claims
        self._closed = False  # the loops end
        # One transaction at a time on this worker's own rows: two of its transactions
        # updating the same rows in different orders could deadlock (on PostgreSQL).
        self._request_rows = asyncio.Lock()
        self._webhook_rows = asyncio.Lock()
        self._failed_turns = 0
        self._last_purge = 0.0
        # Finished attempts and deliveries wait here for the loop's next round trip.
        self._finished: list[tuple[Outcome, asyncio.Future[None]]] = []
        self._settled: list[tuple[tuple[WebhookJob, bool], asyncio.Future[None]]] = []
        self._finished_since = 0.0
        self._recording = 0  # outcomes in the round trip under way
        self._ready: deque[Claim] = deque()  # claimed ahead, not started yet
        self._run_seconds = 0.0  # how long an attempt takes (moving average)
        # Submissions wake the claim loop only while it waits for new work: while it waits
        # for a slot (or the admission), a new request changes nothing for it.
        self._submissions = 0
        self._awaiting_work = False

    # -- control -------------------------------------------------------------

    async def start(self) -> None:
        self._work.set()
        self._webhooks.set()
        self._loops = [
            asyncio.create_task(self._upkeep_loop(), name="kingpost-async-upkeep"),
            asyncio.create_task(self._claim_loop(), name="kingpost-async-claim"),
            asyncio.create_task(self._webhook_loop(), name="kingpost-async-webhooks"),
        ]

    def wake(self) -> None:
        """New work may be waiting (a request was submitted)."""
        self._submissions += 1
        if self._awaiting_work:
            self._work.set()

    async def stop(self, grace: float = 10.0) -> None:
        """Stop claiming, let running requests finish within ``grace``, give back the rest."""
        if not self._loops:
            return  # never started
        self._stopping = True
        self._work.set()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace)
        unfinished = [claim for claim, _ in self.running.values()] + list(self._ready)
        self._ready.clear()
        for _, cancelled in self.running.values():
            cancelled.set()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=2.0)
        self._closed = True
        self._work.set()
        self._webhooks.set()
        upkeep, *turns = self._loops
        upkeep.cancel()
        await asyncio.wait(turns, timeout=self.settings.poll_interval + 5.0)
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        if unfinished:
            await self.store.run(self.store.give_back, unfinished, self.clock())

    # -- claiming and running ---------------------------------------------------

    def _free_slots(self) -> int:
        if self._stopping:
            return 0
        free = 0
        # A finished attempt being recorded no longer holds a model slot.
        running = len(self.running) - len(self._finished) - self._recording
        while running + free < self.settings.concurrency and self.admission.may_start(
            running + free
        ):
            free += 1
        return free

    def _lookahead(self) -> int:
        """How many claims to hold beyond the free slots: about ``LOOKAHEAD_SECONDS`` of work.

        A fast model then needs one round trip per batch, not per request; a slow one
        holds nothing ahead (what it holds is leased, so no other worker can run it).
        """
        if self._run_seconds <= 0:
            return 0
        ahead = LOOKAHEAD_SECONDS * self.settings.concurrency / self._run_seconds
        return min(MAX_LOOKAHEAD, int(ahead))

    def _start(self, claim: Claim) -> None:
        # Counted as running from now, so the next turn sees its slot taken.
        cancelled = asyncio.Event()
        self.running[claim.id] = (claim, cancelled)
        self._spawn(self._run(claim, cancelled))

    async def _claim_loop(self) -> None:
        """Each turn: start held claims, then (when needed) one round trip that records
        what finished and claims what the free slots, and the lookahead, take."""
        settings, store, ready = self.settings, self.store, self._ready
        while not self._closed:
            free = self._free_slots()
            while free > 0 and ready:
                self._start(ready.popleft())
                free -= 1
            finished_due = bool(self._finished) and (
                not ready
                or len(self._finished) >= BATCH_OUTCOMES
                or self.clock() - self._finished_since >= BATCH_WAIT
            )
            if not finished_due and (free == 0 or self._stopping):
                await self._wait_for_change(BATCH_WAIT if self._finished else None)
                continue
            want = 0 if self._stopping else max(0, free + self._lookahead() - len(ready))
            self._work.clear()
            submissions = self._submissions
            finished, self._finished = self._finished, []
            self._recording = len(finished)
            try:
                async with self._request_rows:
                    claims = await store.exchange_soon(
                        settings.queue,
                        self.owner,
                        [outcome for outcome, _ in finished],
                        want,
                        self.clock(),
                        settings.lease_seconds,
                        settings.keep_outputs,
                    )
            except Exception as exc:
                self._recording = 0
                # A transient failure (a lost connection): the outcomes wait for the next
                # turn, their leases renewed meanwhile. Given up on, a lease runs out and
                # the request is run again; nothing is lost either way.
                self._failed_turns += 1
                logger.warning("async queue: recording and claiming failed: %r", exc)
                if self._failed_turns >= MAX_FAILED_TURNS:
                    _resolve(finished, exc)
                else:
                    self._finished[:0] = finished
                await asyncio.sleep(settings.poll_interval)
                continue
            self._recording = 0
            self._failed_turns = 0
            _resolve(finished, None)
            ready.extend(claims)
            idle = not claims and not self._finished and not ready and free > 0
            # Nothing waiting: until a submission (unless one came during the claim).
            if idle and self._submissions == submissions:
                self._awaiting_work = True
                try:
                    await _wait(self._work, settings.poll_interval)
                finally:
                    self._awaiting_work = False

    async def _wait_for_change(self, timeout: float | None = None) -> None:
        """Until a running request ends, the admission changes, or the timeout passes."""
        self._work.clear()
        waits = [
            asyncio.ensure_future(self._work.wait()),
            asyncio.ensure_future(self.admission.changed()),
        ]
        try:
            await asyncio.wait(
                waits,
                timeout=self.settings.poll_interval if timeout is None else timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for wait in waits:
                wait.cancel()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, claim: Claim, cancelled: asyncio.Event) -> None:
        output: bytes | None = None
        failure: InvokeFailure | None = None
        started = time.monotonic()
        try:
            output = await self.invoke(claim.id, claim.model_input, cancelled)
        except InvokeFailure as exc:
            failure = exc
        except Exception as exc:  # an invoke of the platform's may raise anything
            failure = InvokeFailure(500, f"{type(exc).__name__}: {exc}")
        took = time.monotonic() - started
        self._run_seconds = took if self._run_seconds <= 0 else 0.8 * self._run_seconds + 0.2 * took
        if cancelled.is_set():
            del self.running[claim.id]
            return  # the lease is gone or being given back: another attempt will run it
        try:
            await self._record(claim, output, failure)
        except Exception:
            # The lease runs out and the request is run again: nothing is lost.
            logger.exception("async queue: could not record the outcome of %s", claim.id)
        finally:
            self.running.pop(claim.id, None)
            self._work.set()  # its slot is free for the next claim

    async def _record(
        self, claim: Claim, output: bytes | None, failure: InvokeFailure | None
    ) -> None:
        """Hand the outcome to the claim loop and wait until it is written.

        Its model slot goes to the next claim held ahead at once; the request stays
        among ``running`` (its lease renewed) until the write, which shares one
        transaction with the next claims.
        """
        if failure is None:
            outcome = Outcome(claim, "succeeded", output=output)
        else:
            error = classify(failure.status, failure.message)
            if error.retryable and claim.attempt < claim.max_attempts:
                delay = backoff_seconds(claim.attempt, claim.initial_delay_ms, claim.max_delay_ms)
                outcome = Outcome(
                    claim, "retry", error=error.as_dict(), available_at=self.clock() + delay
                )
                asyncio.get_running_loop().call_later(delay, self._work.set)
            else:
                outcome = Outcome(claim, "failed", error=error.as_dict())
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not self._finished:
            self._finished_since = self.clock()
        self._finished.append((outcome, done))
        # Its slot is free now: the next claim held ahead starts at once, not a turn later.
        if self._ready and self._free_slots() > 0:
            self._start(self._ready.popleft())
        self._work.set()
        await done
        if outcome.kind != "retry" and claim.has_webhook:
            self._webhooks.set()

    # -- leases, expiry, retention ------------------------------------------------

    async def _upkeep_loop(self) -> None:
        settings = self.settings
        interval = min(settings.lease_seconds / 3, settings.webhook_lease_seconds / 3, 1.0)
        while True:
            await asyncio.sleep(interval)
            try:
                await self._upkeep()
            except Exception:
                logger.exception("async queue: upkeep failed; trying again")

    async def _upkeep(self) -> None:
        store, settings, now = self.store, self.settings, self.clock()
        held_ids = [*self.running, *(claim.id for claim in self._ready)]
        if held_ids:
            async with self._request_rows:
                held = await store.run(
                    store.renew, self.owner, held_ids, now, settings.lease_seconds
                )
            # Not renewed: taken over, or recorded meanwhile (the renewal ran while the
            # claim loop went on, so only these ids are judged, not claims made since).
            lost = set(held_ids) - held
            for request_id in lost:
                entry = self.running.get(request_id)
                if entry is not None and not entry[1].is_set():
                    logger.warning("async queue: lost the lease of %s; stopping it", request_id)
                    entry[1].set()
            if lost:  # held ahead and lost: not ours to start
                kept = [claim for claim in self._ready if claim.id not in lost]
                self._ready.clear()
                self._ready.extend(kept)
        delivering = list(self._delivering)
        if delivering:
            lease = settings.webhook_lease_seconds
            async with self._webhook_rows:
                await store.run(store.renew_webhooks, self.owner, delivering, now, lease)
        released = await store.run(
            store.release_lost, settings.queue, now, "the worker running the request stopped"
        )
        expired = await store.run(store.expire_due, settings.queue, now)
        if released or expired:
            self._work.set()
            self._webhooks.set()
        if now - self._last_purge >= settings.purge_interval:
            self._last_purge = now
            await store.run(store.purge, settings.queue, now - settings.retention_seconds)

    # -- webhooks -------------------------------------------------------------------

    async def _webhook_loop(self) -> None:
        """Like the claim loop: settle finished deliveries and claim due ones in one trip."""
        settings, store = self.settings, self.store
        while not self._closed:
            free = 0 if self._stopping else settings.webhook_concurrency - len(self._delivering)
            if free <= 0 and not self._settled:
                self._webhooks.clear()
                await _wait(self._webhooks, settings.poll_interval)
                continue
            self._webhooks.clear()
            settled, self._settled = self._settled, []
            try:
                async with self._webhook_rows:
                    jobs = await store.run(
                        store.webhook_exchange,
                        settings.queue,
                        self.owner,
                        [item for item, _ in settled],
                        free,
                        self.clock(),
                        settings.webhook_lease_seconds,
                        settings.keep_outputs,
                    )
            except Exception as exc:
                logger.warning("async queue: webhook bookkeeping failed: %r", exc)
                self._settled[:0] = settled  # delivered at least once; settled next turn
                await asyncio.sleep(settings.poll_interval)
                continue
            _resolve(settled, None)
            for job in jobs:
                self._delivering.add(job.id)
                self._spawn(self._deliver(job))
            if not jobs and not self._settled:
                await _wait(self._webhooks, settings.poll_interval)

    async def _deliver(self, job: WebhookJob) -> None:
        settings, store = self.settings, self.store
        try:
            delivery = await self.sender.deliver(job)
            if delivery.delivered:
                await self._settle(job, True)
            elif delivery.retry and job.attempt < settings.webhook_max_attempts:
                delay = backoff_seconds(
                    job.attempt, settings.webhook_initial_delay_ms, settings.webhook_max_delay_ms
                )
                logger.info("webhook of %s: %s; again in %.1f s", job.id, delivery.detail, delay)
                await store.run(store.webhook_retry, job, self.clock() + delay)
                asyncio.get_running_loop().call_later(delay, self._webhooks.set)
            else:
                logger.warning("webhook of %s failed for good: %s", job.id, delivery.detail)
                await self._settle(job, False)
        except Exception:
            logger.exception("async queue: webhook delivery of %s failed", job.id)
        finally:
            self._delivering.discard(job.id)
            self._webhooks.set()

    async def _settle(self, job: WebhookJob, delivered: bool) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._settled.append(((job, delivered), done))
        self._webhooks.set()
        await done


async def _wait(event: asyncio.Event, timeout: float) -> None:
    """Until ``event`` is set or ``timeout`` passes.

    Not ``wait_for``: before Python 3.12 it can swallow a cancellation that
    arrives as the event is set, and a loop being stopped would run on.
    """
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait((waiter,), timeout=timeout)
    finally:
        waiter.cancel()


def _resolve(waiting: list[tuple[Any, asyncio.Future[None]]], exc: Exception | None) -> None:
    for _, future in waiting:
        if not future.done():
            if exc is None:
                future.set_result(None)
            else:
                future.set_exception(exc)
