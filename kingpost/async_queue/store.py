"""The durable queue: one table of async requests, on SQLite or PostgreSQL (SQLAlchemy Core).

Every state change is one short transaction, so a process killed at any point
leaves each request in a state another process can pick up:

    QUEUED --claim--> IN_PROGRESS --succeed--> SUCCEEDED (webhook PENDING -> SUCCEEDED)
       |  ^               |  |                      `--webhook gave up--> WEBHOOK_FAILED
       |  `---retry-------'  `--fail--> FAILED (webhook PENDING -> SUCCEEDED | FAILED)
       |  `--lease ran out (worker died)--'
       |--past max_time_in_queue--> EXPIRED (webhook PENDING -> ...)
       `--cancel--> CANCELED

A claim is a lease: ``lease_owner`` plus ``attempts`` fence it, so a worker
whose lease ran out (and whose work was given to another) cannot record an
outcome. The webhook of a finished request is claimed the same way. Claims
take the lowest ``priority``, then the oldest (``seq``); on PostgreSQL with
``FOR UPDATE SKIP LOCKED`` so that several processes never take the same row.

Methods are synchronous; async code calls them through ``run`` (in the event
loop for SQLite, whose WAL checkpoints run in a thread; in threads for PostgreSQL).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from kingpost.async_queue.group_commit import GroupCommit
from kingpost.async_queue.models import TERMINAL, Status, WebhookStatus

T = TypeVar("T")

metadata = sa.MetaData()
CHECKPOINT_SECONDS = 1.0  # how often SQLite's WAL is folded into the database, at most

requests = sa.Table(
    "kingpost_async_requests",
    metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("queue", sa.String(200), nullable=False),
    sa.Column("model_id", sa.String(200), nullable=False),
    sa.Column("deployment_id", sa.String(200), nullable=False),
    sa.Column("priority", sa.SmallInteger(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("webhook_status", sa.String(24), nullable=False),
    sa.Column("webhook_endpoint", sa.Text()),
    sa.Column("model_input", sa.LargeBinary(), nullable=False),
    sa.Column("output", sa.LargeBinary()),
    sa.Column("errors", sa.Text(), nullable=False, server_default="[]"),
    sa.Column("created_at", sa.Float(), nullable=False),
    sa.Column("status_at", sa.Float(), nullable=False),
    sa.Column("available_at", sa.Float(), nullable=False),
    sa.Column("expires_at", sa.Float(), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("max_attempts", sa.Integer(), nullable=False),
    sa.Column("initial_delay_ms", sa.Integer(), nullable=False),
    sa.Column("max_delay_ms", sa.Integer(), nullable=False),
    sa.Column("lease_owner", sa.String(64)),
    sa.Column("lease_until", sa.Float()),
    sa.Column("webhook_attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("webhook_next_at", sa.Float()),
    sa.Column("webhook_owner", sa.String(64)),
    sa.Column("webhook_lease_until", sa.Float()),
    sa.Column("settled_at", sa.Float()),  # terminal and webhook done: retention counts from here
)
c = requests.c


def _is(column: Any, value: str) -> Any:
    """``column = 'value'`` with the value written into the SQL: a query can use a partial
    index only when its WHERE holds the index's own condition, literally."""
    return column == sa.literal_column(f"'{value}'")


QUEUED = _is(c.status, Status.QUEUED.value)
RUNNING = _is(c.status, Status.IN_PROGRESS.value)
_PENDING = _is(c.webhook_status, WebhookStatus.PENDING.value)


def _partial_index(name: str, *columns: Any, where: Any) -> sa.Index:
    return sa.Index(name, *columns, sqlite_where=where, postgresql_where=where)


# Partial indexes: a request is in the claim and expiry indexes only while QUEUED, in the
# lease index only while IN_PROGRESS, in the webhook index only while one is PENDING. A
# request's life then changes a few small, hot index pages rather than a delete and an
# insert in every index per status change (the write of each commit, and most of its cost).
_partial_index("kingpost_async_queued", c.queue, c.priority, c.seq, where=QUEUED)
_partial_index("kingpost_async_expiring", c.queue, c.expires_at, where=QUEUED)
_partial_index("kingpost_async_leased", c.queue, c.lease_until, where=RUNNING)
_partial_index("kingpost_async_webhooks_due", c.queue, c.webhook_next_at, where=_PENDING)
_partial_index("kingpost_async_settled_at", c.settled_at, where=c.settled_at.isnot(None))
# What earlier versions indexed instead: dropped when a store opens.
_FORMER_INDEXES = (
    "kingpost_async_claim",
    "kingpost_async_expiry",
    "kingpost_async_webhooks",
    "kingpost_async_settled",
)

FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.EXPIRED)


def new_request_id() -> str:
    """A UUIDv7 (RFC 9562) as 32 hex digits: milliseconds since the epoch, then 74 random
    bits. Ids made later sort later, so new requests go to the end of the id index, where
    its pages are already in memory, rather than to random pages of it."""
    random = int.from_bytes(os.urandom(10), "big")
    value = (
        (time.time_ns() // 1_000_000) << 80
        | 0x7 << 76  # version
        | (random >> 62 & 0xFFF) << 64
        | 0b10 << 62  # variant
        | random & ((1 << 62) - 1)
    )
    return f"{value:032x}"


@dataclass(frozen=True)
class NewRequest:
    id: str
    queue: str
    model_id: str
    deployment_id: str
    priority: int
    webhook_endpoint: str | None
    model_input: bytes
    created_at: float
    expires_at: float
    max_attempts: int
    initial_delay_ms: int
    max_delay_ms: int

    def row(self) -> dict[str, Any]:
        webhook = WebhookStatus.NO_WEBHOOK_PROVIDED
        if self.webhook_endpoint:
            webhook = WebhookStatus.PENDING
        return {
            "id": self.id,
            "queue": self.queue,
            "model_id": self.model_id,
            "deployment_id": self.deployment_id,
            "priority": self.priority,
            "status": Status.QUEUED.value,
            "webhook_status": webhook.value,
            "webhook_endpoint": self.webhook_endpoint,
            "model_input": self.model_input,
            "errors": "[]",
            "created_at": self.created_at,
            "status_at": self.created_at,
            "available_at": self.created_at,
            "expires_at": self.expires_at,
            "attempts": 0,
            "max_attempts": self.max_attempts,
            "initial_delay_ms": self.initial_delay_ms,
            "max_delay_ms": self.max_delay_ms,
            "webhook_attempts": 0,
        }


_NEW_COLUMNS = (  # what NewRequest.row() sets
    "id",
    "queue",
    "model_id",
    "deployment_id",
    "priority",
    "status",
    "webhook_status",
    "webhook_endpoint",
    "model_input",
    "errors",
    "created_at",
    "status_at",
    "available_at",
    "expires_at",
    "attempts",
    "max_attempts",
    "initial_delay_ms",
    "max_delay_ms",
    "webhook_attempts",
)


@dataclass(frozen=True)
class StoredRequest:
    """A request as ``GET /async_request/{id}`` and ``.../result`` see it."""

    id: str
    queue: str
    model_id: str
    deployment_id: str
    status: Status
    webhook_status: WebhookStatus
    created_at: float
    status_at: float
    errors: list[dict[str, str]]
    output: bytes | None


@dataclass(frozen=True)
class Claim:
    """One attempt of one request, leased to one worker."""

    id: str
    owner: str
    attempt: int
    max_attempts: int
    initial_delay_ms: int
    max_delay_ms: int
    model_input: bytes
    has_webhook: bool = False


@dataclass(frozen=True)
class Outcome:
    """How one attempt ended: ``succeeded`` (output), ``failed`` or ``retry`` (error)."""

    claim: Claim
    kind: Literal["succeeded", "failed", "retry"]
    output: bytes | None = None
    error: dict[str, str] | None = None
    available_at: float = 0.0


@dataclass(frozen=True)
class WebhookJob:
    """One delivery attempt of a finished request's webhook, leased to one worker."""

    id: str
    owner: str
    attempt: int
    endpoint: str
    model_id: str
    deployment_id: str
    status: Status
    errors: list[dict[str, str]]
    output: bytes | None
    finished_at: float


B = sa.bindparam


def _settled_now() -> Any:
    """``settled_at``: now, unless a webhook is still to be sent."""
    return sa.case((_PENDING, sa.null()), else_=B("b_now"))


class _Statements:
    """The hot statements, built once (SQLAlchemy then only binds and runs them)."""

    def __init__(self, skip_locked: bool) -> None:
        queued = sa.select(c.seq).where(
            c.queue == B("b_queue"), QUEUED, c.available_at <= B("b_now")
        )
        queued = queued.order_by(c.priority, c.seq).limit(B("b_limit"))
        due = sa.select(c.seq).where(
            c.queue == B("b_queue"),
            _PENDING,
            c.status.in_([s.value for s in FINISHED]),
            c.webhook_next_at <= B("b_now"),
            sa.or_(c.webhook_lease_until.is_(None), c.webhook_lease_until < B("b_now")),
        )
        due = due.order_by(c.webhook_next_at).limit(B("b_limit"))
        if skip_locked:
            # Several processes claim at once: each skips the rows the others hold. The
            # pick is a CTE so that it runs exactly once (an IN subquery may be re-run).
            picked = queued.with_for_update(skip_locked=True).cte("picked")
            chosen: Any = c.seq == picked.c.seq
            picked_due = due.with_for_update(skip_locked=True).cte("picked_due")
            chosen_due: Any = c.seq == picked_due.c.seq
        else:
            chosen = c.seq.in_(queued.scalar_subquery())
            chosen_due = c.seq.in_(due.scalar_subquery())
        self.claim = (
            requests.update()
            .where(chosen, QUEUED)
            .values(
                status=Status.IN_PROGRESS.value,
                status_at=B("b_now"),
                lease_owner=B("b_owner"),
                lease_until=B("b_until"),
                attempts=c.attempts + 1,
            )
            .returning(
                c.id,
                c.seq,
                c.priority,
                c.attempts,
                c.max_attempts,
                c.initial_delay_ms,
                c.max_delay_ms,
                c.model_input,
                c.webhook_endpoint,
            )
        )
        self.claim_webhooks = (
            requests.update()
            .where(chosen_due, _PENDING)
            .values(
                webhook_owner=B("b_owner"),
                webhook_lease_until=B("b_until"),
                webhook_attempts=c.webhook_attempts + 1,
            )
            .returning(
                c.id,
                c.webhook_attempts,
                c.webhook_endpoint,
                c.model_id,
                c.deployment_id,
                c.status,
                c.errors,
                c.output,
                c.status_at,
            )
        )
        self.get = sa.select(
            c.id,
            c.queue,
            c.model_id,
            c.deployment_id,
            c.status,
            c.webhook_status,
            c.created_at,
            c.status_at,
            c.errors,
            c.output,
        ).where(c.id == B("b_id"))
        leased = requests.update().where(
            c.id == B("b_id"),
            c.lease_owner == B("b_owner"),
            c.attempts == B("b_attempt"),
            RUNNING,
        )
        released: dict[str, Any] = {
            "status_at": B("b_now"),
            "lease_owner": None,
            "lease_until": None,
        }
        self.succeeded = leased.values(
            status=Status.SUCCEEDED.value,
            output=sa.case(
                (_PENDING, B("b_output", type_=sa.LargeBinary())),
                else_=B("b_kept", type_=sa.LargeBinary()),
            ),
            errors="[]",
            webhook_next_at=B("b_now"),
            settled_at=_settled_now(),
            **released,
        )
        self.failed = leased.values(
            status=Status.FAILED.value,
            errors=B("b_errors"),
            webhook_next_at=B("b_now"),
            settled_at=_settled_now(),
            **released,
        )
        self.retry = leased.values(
            status=Status.QUEUED.value,
            errors=B("b_errors"),
            available_at=B("b_available"),
            **released,
        )
        delivering = requests.update().where(
            c.id == B("b_id"),
            c.webhook_owner == B("b_owner"),
            c.webhook_attempts == B("b_attempt"),
            _PENDING,
        )
        settle: dict[str, Any] = {
            "webhook_owner": None,
            "webhook_lease_until": None,
            "settled_at": B("b_now"),
        }
        self.delivered = delivering.values(webhook_status=WebhookStatus.SUCCEEDED.value, **settle)
        undelivered = {
            "webhook_status": WebhookStatus.FAILED.value,
            "status": sa.case(
                (c.status == Status.SUCCEEDED.value, Status.WEBHOOK_FAILED.value),
                else_=c.status,
            ),
            "status_at": B("b_now"),
            **settle,
        }
        self.undelivered = delivering.values(**undelivered)
        self.delivered_dropped = delivering.values(
            webhook_status=WebhookStatus.SUCCEEDED.value, output=None, **settle
        )
        self.undelivered_dropped = delivering.values(output=None, **undelivered)


class _DriverStatement:
    """A statement compiled once to the SQL and positional parameters of SQLite's driver.

    The hot path (insert, record, claim) runs these on the store's own connection,
    without SQLAlchemy building each execution: its per-call work costs more than
    SQLite's own.
    """

    def __init__(self, statement: Any, engine: Engine, **compile_options: Any) -> None:
        compiled = statement.compile(
            dialect=engine.dialect, compile_kwargs={"render_postcompile": True}, **compile_options
        )
        self.sql: str = compiled.string
        self.order: tuple[str, ...] = tuple(compiled.positiontup or ())
        self.defaults: dict[str, Any] = dict(compiled.params)

    def args(self, params: dict[str, Any]) -> tuple[Any, ...]:
        defaults = self.defaults
        return tuple(params[key] if key in params else defaults[key] for key in self.order)


class _Transaction(Protocol):
    """One transaction of the hot path: ``many`` returns the rows changed, ``rows`` the
    rows returned."""

    def many(self, name: str, params: list[dict[str, Any]]) -> int: ...

    def rows(self, name: str, params: dict[str, Any]) -> Sequence[Sequence[Any]]: ...


class _SQLAlchemyTransaction:
    def __init__(self, conn: Connection, statements: _Statements) -> None:
        self.conn = conn
        self.statements = statements

    def many(self, name: str, params: list[dict[str, Any]]) -> int:
        return int(self.conn.execute(getattr(self.statements, name), params).rowcount)

    def rows(self, name: str, params: dict[str, Any]) -> Sequence[Sequence[Any]]:
        return self.conn.execute(getattr(self.statements, name), params).all()


class _DriverTransaction:
    def __init__(self, db: Any, statements: dict[str, _DriverStatement]) -> None:
        self.db = db
        self.statements = statements

    def many(self, name: str, params: list[dict[str, Any]]) -> int:
        statement = self.statements[name]
        cursor = self.db.executemany(statement.sql, [statement.args(row) for row in params])
        return int(cursor.rowcount)

    def rows(self, name: str, params: dict[str, Any]) -> Sequence[Sequence[Any]]:
        statement = self.statements[name]
        return list(self.db.execute(statement.sql, statement.args(params)).fetchall())


class _SQLiteWriter:
    """The store's own SQLite connection for the hot path, used from the event loop only."""

    def __init__(self, engine: Engine, statements: _Statements) -> None:
        self._raw = engine.raw_connection()
        self.db: Any = self._raw.driver_connection
        self.statements = {
            "insert": _DriverStatement(requests.insert(), engine, column_keys=list(_NEW_COLUMNS)),
            **{
                name: _DriverStatement(getattr(statements, name), engine)
                for name in ("claim", "succeeded", "failed", "retry")
            },
        }

    @contextlib.contextmanager
    def transaction(self) -> Iterator[_DriverTransaction]:
        db = self.db
        db.execute("BEGIN IMMEDIATE")  # the write lock up front, as the engine's writers do
        try:
            yield _DriverTransaction(db, self.statements)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._raw.close()


class _SharedTurn:
    """SQLite in one process: the hot writes asked for in one turn of the event loop, in
    one transaction.

    Submissions' inserts (first) and the worker's records and claims (after, so they see
    the new rows) share one BEGIN ... COMMIT, which writes the pages they both change
    (the table's newest leaf, the queued index) once. The worker's call joins a write
    already waiting for submissions; alone, it runs at once. Each caller's future is resolved
    after the COMMIT, so a submission is durable when it is answered. If the shared
    transaction fails, each part is run again in a transaction of its own, so that one
    part's failure reaches only its own callers.
    """

    def __init__(self, writer: _SQLiteWriter, after: Callable[[], None]) -> None:
        self.writer = writer
        self.after = after
        self._rows: list[dict[str, Any]] = []
        self._inserted: list[asyncio.Future[None]] = []
        self._calls: list[tuple[Callable[[_Transaction], Any], asyncio.Future[Any]]] = []
        self._scheduled = False

    def insert(self, row: dict[str, Any]) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._rows.append(row)
        self._inserted.append(future)
        self._schedule(loop)
        return future

    def call(self, fn: Callable[[_Transaction], T]) -> asyncio.Future[T]:
        """``fn`` in the write that submissions wait for, or now if none is waiting (a
        call alone is not held back: the worker's claims would wait for nothing)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if self._scheduled:
            self._calls.append((fn, future))
        else:
            self._alone(fn, [future])
            self.after()
        return future

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        # Two turns of the loop later: a request read in this turn reaches its handler
        # in the next, and joins the write.
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(loop.call_soon, self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        rows, inserted, calls = self._rows, self._inserted, self._calls
        self._rows, self._inserted, self._calls = [], [], []
        calls = [(fn, future) for fn, future in calls if not future.cancelled()]
        try:
            with self.writer.transaction() as transaction:
                if rows:
                    transaction.many("insert", rows)
                results = [fn(transaction) for fn, _ in calls]
        except Exception:
            if rows:
                self._alone(lambda transaction: transaction.many("insert", rows), inserted)
            for fn, future in calls:
                self._alone(fn, [future])
        else:
            for future in inserted:
                if not future.done():
                    future.set_result(None)
            for (_, future), result in zip(calls, results, strict=True):
                if not future.done():
                    future.set_result(result)
        self.after()

    def _alone(self, fn: Callable[[_Transaction], Any], futures: list[asyncio.Future[Any]]) -> None:
        try:
            with self.writer.transaction() as transaction:
                result = fn(transaction)
        except Exception as exc:
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
        else:
            for future in futures:
                if not future.done():
                    future.set_result(result)


def default_database_url(name: str, model_dir: Path) -> str:
    """An SQLite file under ``$KINGPOST_STATE_DIR`` (default ``~/.local/state/kingpost``).

    One per model directory (a hash of its path), so two models never share a queue.
    """
    base = os.environ.get("KINGPOST_STATE_DIR") or str(Path.home() / ".local/state/kingpost")
    folder = Path(base) / "async"
    folder.mkdir(parents=True, exist_ok=True)
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "model"
    digest = hashlib.sha256(str(model_dir.resolve()).encode()).hexdigest()[:10]
    return f"sqlite:///{folder / safe}-{digest}.sqlite3"


class AsyncStore:
    """The queue table behind a SQLAlchemy engine, with the threads it runs in."""

    def __init__(self, url: str) -> None:
        self.url = normalise_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        self.engine = self._make_engine()
        self._statements = _Statements(skip_locked=not self.is_sqlite)
        with self.engine.begin() as conn:
            for name in _FORMER_INDEXES:
                conn.execute(sa.text(f"DROP INDEX IF EXISTS {name}"))
        metadata.create_all(self.engine)
        # create_all makes a table's indexes only with the table: a table made by an
        # earlier version gets the indexes it lacks here.
        for index in sorted(requests.indexes, key=lambda index: str(index.name)):
            index.create(self.engine, checkfirst=True)
        self._writer = _SQLiteWriter(self.engine, self._statements) if self.is_sqlite else None
        self._turn = None if self._writer is None else _SharedTurn(self._writer, self._after_write)
        # PostgreSQL: submissions that arrive while an insert is under way go into the next.
        self._submits: GroupCommit[NewRequest] = GroupCommit(
            lambda items: self.run(self.submit, items)
        )
        # SQLite's calls take tens of microseconds, about what a hop to a thread costs
        # (and on a busy machine a hop waits for the scheduler), so they run in the event
        # loop; only the WAL checkpoint, which syncs the disk, runs in a thread of its own.
        # PostgreSQL's calls wait on the network, in threads.
        self._threads = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="kingpost-async-checkpoint")
            if self.is_sqlite
            else ThreadPoolExecutor(max_workers=4, thread_name_prefix="kingpost-async-db")
        )
        self._checkpointed = time.monotonic()
        self._checkpointing: Future[None] | None = None

    def _make_engine(self) -> Engine:
        if not self.is_sqlite:
            return sa.create_engine(self.url, pool_size=5, max_overflow=5, pool_pre_ping=True)
        engine = sa.create_engine(self.url, connect_args={"check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (below)
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            # With WAL, NORMAL loses nothing when the process dies (only on power loss).
            cursor.execute("PRAGMA synchronous=NORMAL")
            # Another process's write takes milliseconds; waiting longer means trouble.
            cursor.execute("PRAGMA busy_timeout=5000")
            # Commits only append to the WAL; ``checkpoint`` folds it into the database.
            cursor.execute("PRAGMA wal_autocheckpoint=0")
            cursor.close()

        @sa.event.listens_for(engine, "begin")
        def _begin(connection: Connection) -> None:
            # Writers take the lock up front, so two processes never deadlock upgrading.
            read = connection.get_execution_options().get("read_only", False)
            connection.exec_driver_sql("BEGIN" if read else "BEGIN IMMEDIATE")

        return engine

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a store method from async code (in the store's threads, for PostgreSQL)."""
        if not self.is_sqlite:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._threads, fn, *args)
        result = fn(*args)
        self._after_write()
        return result

    def _after_write(self) -> None:
        if time.monotonic() - self._checkpointed >= CHECKPOINT_SECONDS:
            self._start_checkpoint()

    def _start_checkpoint(self) -> None:
        if self._checkpointing is None or self._checkpointing.done():
            self._checkpointed = time.monotonic()
            self._checkpointing = self._threads.submit(self.checkpoint)

    def checkpoint(self) -> None:
        """Copy the WAL's pages into the SQLite database (without blocking its writers)."""
        raw = self.engine.raw_connection()
        try:
            raw.driver_connection.execute("PRAGMA wal_checkpoint(PASSIVE)")  # type: ignore[union-attr]
        finally:
            raw.close()

    def close(self) -> None:
        self._threads.shutdown(wait=True)
        if self._writer is not None:
            self._writer.close()
        self.engine.dispose()

    @contextlib.contextmanager
    def _hot(self) -> Iterator[_Transaction]:
        """A write transaction of the hot path: on SQLite's own connection, else the engine's."""
        if self._writer is not None:
            with self._writer.transaction() as transaction:
                yield transaction
        else:
            with self.engine.begin() as conn:
                yield _SQLAlchemyTransaction(conn, self._statements)

    def _read(self) -> Any:
        return self.engine.connect().execution_options(read_only=True)

    # -- submitting and reading ------------------------------------------------

    def submit(self, new: Sequence[NewRequest]) -> None:
        rows = [item.row() for item in new]
        if self._writer is None:
            with self.engine.begin() as conn:
                conn.execute(requests.insert(), rows)
        else:
            with self._writer.transaction() as transaction:
                transaction.many("insert", rows)

    async def add(self, new: NewRequest) -> None:
        """Submit one request from async code; returns once its row is committed.

        On SQLite it shares the transaction of this loop turn's other hot writes; on
        PostgreSQL the submissions that came meanwhile share one insert.
        """
        if self._turn is not None:
            await self._turn.insert(new.row())
        else:
            await self._submits.add(new)

    def get(self, request_id: str) -> StoredRequest | None:
        with self._read() as conn, conn.begin():
            row = conn.execute(self._statements.get, {"b_id": request_id}).first()
        if row is None:
            return None
        return StoredRequest(
            id=row.id,
            queue=row.queue,
            model_id=row.model_id,
            deployment_id=row.deployment_id,
            status=Status(row.status),
            webhook_status=WebhookStatus(row.webhook_status),
            created_at=row.created_at,
            status_at=row.status_at,
            errors=orjson.loads(row.errors),
            output=row.output,
        )

    def counts(self, queue: str) -> tuple[int, int]:
        """(queued, in progress) of one queue."""
        # One count per status, each answered from its partial index.
        queued, running = (
            sa.select(sa.func.count()).where(c.queue == queue, state).scalar_subquery()
            for state in (QUEUED, RUNNING)
        )
        with self._read() as conn, conn.begin():
            row = conn.execute(sa.select(queued, running)).one()
        return int(row[0]), int(row[1])

    def depth(self, queue: str | None = None) -> list[tuple[str, str, str, int, int]]:
        """``(model_id, deployment_id, status, priority, count)`` of waiting and running
        work, of one queue or (None) of all."""
        parts = []
        for state in (QUEUED, RUNNING):
            part = sa.select(c.model_id, c.deployment_id, c.status, c.priority, sa.func.count())
            part = part.where(state)
            if queue is not None:
                part = part.where(c.queue == queue)
            parts.append(part.group_by(c.model_id, c.deployment_id, c.status, c.priority))
        with self._read() as conn, conn.begin():
            return [tuple(row) for row in conn.execute(sa.union_all(*parts))]

    def oldest_queued(self, queue: str | None = None) -> list[tuple[str, str, float]]:
        """``(model_id, deployment_id, created_at)`` of the oldest QUEUED request per queue."""
        query = sa.select(c.model_id, c.deployment_id, sa.func.min(c.created_at))
        query = query.where(QUEUED)
        if queue is not None:
            query = query.where(c.queue == queue)
        query = query.group_by(c.model_id, c.deployment_id)
        with self._read() as conn, conn.begin():
            return [tuple(row) for row in conn.execute(query)]

    def unfinished_queues(self) -> list[str]:
        """The queues with work a worker must still do: to run, or a webhook to deliver."""
        to_deliver = sa.and_(_PENDING, c.status.in_([s.value for s in FINISHED]))
        query = sa.union(*(sa.select(c.queue).where(w) for w in (QUEUED, RUNNING, to_deliver)))
        with self._read() as conn, conn.begin():
            return sorted(conn.execute(query).scalars())

    def cancel(self, request_id: str, now: float) -> Status | None:
        """Cancel a QUEUED request. Returns its status before (None if unknown)."""
        with self.engine.begin() as conn:
            status = conn.execute(sa.select(c.status).where(c.id == request_id)).scalar()
            if status != Status.QUEUED:
                return None if status is None else Status(status)
            webhook = sa.case(
                (_PENDING, WebhookStatus.CANCELED.value),
                else_=c.webhook_status,
            )
            conn.execute(
                requests.update()
                .where(c.id == request_id, QUEUED)
                .values(
                    status=Status.CANCELED.value,
                    webhook_status=webhook,
                    status_at=now,
                    settled_at=now,
                    output=None,
                )
            )
        return Status.QUEUED

    # -- the worker's side -----------------------------------------------------

    def claim(
        self, queue: str, owner: str, limit: int, now: float, lease_seconds: float
    ) -> list[Claim]:
        """Lease up to ``limit`` waiting requests, best first."""
        return self.exchange(queue, owner, (), limit, now, lease_seconds)

    def exchange(
        self,
        queue: str,
        owner: str,
        outcomes: Sequence[Outcome],
        limit: int,
        now: float,
        lease_seconds: float,
        keep_output: bool = True,
        transaction: _Transaction | None = None,
    ) -> list[Claim]:
        """Record finished attempts and lease up to ``limit`` new ones, in one transaction
        (``transaction``, or one of its own).

        The worker's one round trip per turn: slots freed by the outcomes are
        filled by the claims.
        """
        if transaction is None:
            with self._hot() as transaction:
                return self.exchange(
                    queue, owner, outcomes, limit, now, lease_seconds, keep_output, transaction
                )
        if outcomes:
            self._record(transaction, outcomes, now, keep_output)
        if limit <= 0:
            return []
        return self._claim(transaction, queue, owner, limit, now, lease_seconds)

    async def exchange_soon(self, *args: Any) -> list[Claim]:
        """``exchange(*args)`` from async code: on SQLite in the transaction of this loop
        turn's other hot writes (the submissions read meanwhile), else in the store's
        threads."""
        if self._turn is None:
            return await self.run(self.exchange, *args)
        exchange: Any = self.exchange  # ``args`` are exchange's own, less the transaction
        return await self._turn.call(lambda hot: exchange(*args, transaction=hot))

    def _claim(
        self,
        transaction: _Transaction,
        queue: str,
        owner: str,
        limit: int,
        now: float,
        lease: float,
    ) -> list[Claim]:
        params = {
            "b_queue": queue,
            "b_owner": owner,
            "b_limit": limit,
            "b_now": now,
            "b_until": now + lease,
        }
        rows = sorted(transaction.rows("claim", params), key=itemgetter(2, 1))  # priority, seq
        # RETURNING keeps no order; the columns come as _Statements.claim lists them.
        return [
            Claim(
                id=request_id,
                owner=owner,
                attempt=attempts,
                max_attempts=max_attempts,
                initial_delay_ms=initial_delay_ms,
                max_delay_ms=max_delay_ms,
                model_input=model_input,
                has_webhook=webhook_endpoint is not None,
            )
            for (
                request_id,
                _seq,
                _priority,
                attempts,
                max_attempts,
                initial_delay_ms,
                max_delay_ms,
                model_input,
                webhook_endpoint,
            ) in rows
        ]

    def renew(self, owner: str, ids: Sequence[str], now: float, lease_seconds: float) -> set[str]:
        """Extend this owner's leases; returns the ids it still holds."""
        if not ids:
            return set()
        query = (
            requests.update()
            .where(c.id.in_(ids), c.lease_owner == owner, RUNNING)
            .values(lease_until=now + lease_seconds)
            .returning(c.id)
        )
        with self.engine.begin() as conn:
            return set(conn.execute(query).scalars())

    def record(self, outcomes: Sequence[Outcome], now: float, keep_output: bool = True) -> int:
        """Record attempts' outcomes in one transaction; returns how many were taken."""
        with self._hot() as transaction:
            return self._record(transaction, outcomes, now, keep_output)

    def _record(
        self,
        transaction: _Transaction,
        outcomes: Sequence[Outcome],
        now: float,
        keep_output: bool,
    ) -> int:
        """An outcome whose lease was lost (the work was given to another worker) is
        dropped. A success keeps its output for the webhook; after it only if
        ``keep_output``.
        """
        by_kind: dict[str, list[dict[str, Any]]] = {"succeeded": [], "failed": [], "retry": []}
        for outcome in outcomes:
            claim = outcome.claim
            params: dict[str, Any] = {
                "b_id": claim.id,
                "b_owner": claim.owner,
                "b_attempt": claim.attempt,
                "b_now": now,
            }
            if outcome.kind == "succeeded":
                params["b_output"] = outcome.output
                params["b_kept"] = outcome.output if keep_output else None
            else:
                params["b_errors"] = orjson.dumps([outcome.error]).decode()
                params["b_available"] = outcome.available_at
            by_kind[outcome.kind].append(params)
        taken = 0
        for kind, rows in by_kind.items():
            if rows:
                taken += transaction.many(kind, rows)
        return taken

    def succeed(self, claim: Claim, output: bytes, now: float, keep_output: bool = True) -> bool:
        return self.record([Outcome(claim, "succeeded", output=output)], now, keep_output) == 1

    def fail(self, claim: Claim, error: dict[str, str], now: float) -> bool:
        return self.record([Outcome(claim, "failed", error=error)], now) == 1

    def retry(self, claim: Claim, error: dict[str, str], available_at: float, now: float) -> bool:
        """Put the request back in the queue, to be claimed from ``available_at``."""
        outcome = Outcome(claim, "retry", error=error, available_at=available_at)
        return self.record([outcome], now) == 1

    def _fenced(self, claim: Claim) -> Any:
        return requests.update().where(
            c.id == claim.id,
            c.lease_owner == claim.owner,
            c.attempts == claim.attempt,
            RUNNING,
        )

    def give_back(self, claims: Sequence[Claim], now: float) -> int:
        """Return unfinished work to the queue at shutdown; the attempt does not count."""
        given = 0
        with self.engine.begin() as conn:
            for claim in claims:
                query = self._fenced(claim).values(
                    status=Status.QUEUED.value,
                    status_at=now,
                    available_at=now,
                    attempts=c.attempts - 1,
                    lease_owner=None,
                    lease_until=None,
                )
                given += conn.execute(query).rowcount
        return given

    def release_lost(self, queue: str, now: float, message: str) -> int:
        """Leases that ran out (their worker died or stalled): back to the queue, or FAILED.

        A lost attempt counts, so a request that kills its worker each time ends.
        """
        lost = sa.and_(c.queue == queue, RUNNING, c.lease_until < now)
        error = orjson.dumps([{"code": "WORKER_LOST", "message": message}]).decode()
        with self.engine.begin() as conn:
            failed = conn.execute(
                requests.update()
                .where(lost, c.attempts >= c.max_attempts)
                .values(
                    status=Status.FAILED.value,
                    status_at=now,
                    errors=error,
                    lease_owner=None,
                    lease_until=None,
                    webhook_next_at=now,
                    settled_at=sa.case((_PENDING, None), else_=now),
                )
            ).rowcount
            requeued = conn.execute(
                requests.update()
                .where(lost)
                .values(
                    status=Status.QUEUED.value,
                    status_at=now,
                    available_at=now,
                    lease_owner=None,
                    lease_until=None,
                )
            ).rowcount
        return int(failed) + int(requeued)

    def expire_due(self, queue: str, now: float) -> int:
        """QUEUED requests never started whose time in the queue ran out become EXPIRED."""
        error = orjson.dumps(
            [{"code": "EXPIRED_IN_QUEUE", "message": "max_time_in_queue_seconds passed"}]
        ).decode()
        query = (
            requests.update()
            .where(
                c.queue == queue,
                QUEUED,
                c.attempts == 0,
                c.expires_at <= now,
            )
            .values(
                status=Status.EXPIRED.value,
                status_at=now,
                errors=error,
                webhook_next_at=now,
                settled_at=sa.case((_PENDING, None), else_=now),
            )
        )
        with self.engine.begin() as conn:
            return int(conn.execute(query).rowcount)

    # -- webhooks ----------------------------------------------------------------

    def claim_webhooks(
        self, owner: str, limit: int, now: float, lease_seconds: float, queue: str
    ) -> list[WebhookJob]:
        """Lease a queue's deliveries that are due: finished requests whose webhook is PENDING."""
        return self.webhook_exchange(queue, owner, (), limit, now, lease_seconds, True)

    def webhook_exchange(
        self,
        queue: str,
        owner: str,
        settled: Sequence[tuple[WebhookJob, bool]],
        limit: int,
        now: float,
        lease_seconds: float,
        keep_output: bool,
    ) -> list[WebhookJob]:
        """Settle finished deliveries and lease up to ``limit`` due ones, in one transaction."""
        with self.engine.begin() as conn:
            if settled:
                self._settle(conn, settled, now, keep_output)
            if limit <= 0:
                return []
            return self._claim_webhooks(conn, queue, owner, limit, now, lease_seconds)

    def _claim_webhooks(
        self, conn: Connection, queue: str, owner: str, limit: int, now: float, lease: float
    ) -> list[WebhookJob]:
        params = {
            "b_queue": queue,
            "b_owner": owner,
            "b_limit": limit,
            "b_now": now,
            "b_until": now + lease,
        }
        rows = conn.execute(self._statements.claim_webhooks, params).all()
        return [
            WebhookJob(
                id=row.id,
                owner=owner,
                attempt=row.webhook_attempts,
                endpoint=row.webhook_endpoint,
                model_id=row.model_id,
                deployment_id=row.deployment_id,
                status=Status(row.status),
                errors=orjson.loads(row.errors),
                output=row.output,
                finished_at=row.status_at,
            )
            for row in rows
        ]

    def renew_webhooks(
        self, owner: str, ids: Sequence[str], now: float, lease_seconds: float
    ) -> None:
        """Extend this owner's delivery leases while the POSTs are under way."""
        if ids:
            query = (
                requests.update()
                .where(c.id.in_(ids), c.webhook_owner == owner, _PENDING)
                .values(webhook_lease_until=now + lease_seconds)
            )
            with self.engine.begin() as conn:
                conn.execute(query)

    def _webhook_fenced(self, job: WebhookJob) -> Any:
        return requests.update().where(
            c.id == job.id,
            c.webhook_owner == job.owner,
            c.webhook_attempts == job.attempt,
            _PENDING,
        )

    def webhook_done(self, job: WebhookJob, delivered: bool, now: float, keep_output: bool) -> bool:
        """The delivery succeeded, or failed for good (a SUCCEEDED request -> WEBHOOK_FAILED)."""
        return self.webhooks_done([(job, delivered)], now, keep_output) == 1

    def webhooks_done(
        self, done: Sequence[tuple[WebhookJob, bool]], now: float, keep_output: bool
    ) -> int:
        """Settle several deliveries in one transaction; returns how many were taken."""
        with self.engine.begin() as conn:
            return self._settle(conn, done, now, keep_output)

    def _settle(
        self,
        conn: Connection,
        done: Sequence[tuple[WebhookJob, bool]],
        now: float,
        keep_output: bool,
    ) -> int:
        statements = self._statements
        delivered = [self._job_params(job, now) for job, ok in done if ok]
        failed = [self._job_params(job, now) for job, ok in done if not ok]
        taken = 0
        if delivered:
            statement = statements.delivered if keep_output else statements.delivered_dropped
            taken += conn.execute(statement, delivered).rowcount
        if failed:
            statement = statements.undelivered if keep_output else statements.undelivered_dropped
            taken += conn.execute(statement, failed).rowcount
        return taken

    @staticmethod
    def _job_params(job: WebhookJob, now: float) -> dict[str, Any]:
        return {"b_id": job.id, "b_owner": job.owner, "b_attempt": job.attempt, "b_now": now}

    def webhook_retry(self, job: WebhookJob, next_at: float) -> bool:
        query = self._webhook_fenced(job).values(
            webhook_next_at=next_at, webhook_owner=None, webhook_lease_until=None
        )
        with self.engine.begin() as conn:
            return bool(conn.execute(query).rowcount)

    # -- retention -----------------------------------------------------------------

    def purge(self, queue: str, settled_before: float) -> int:
        """Delete a queue's requests settled before the given time; returns how many."""
        query = requests.delete().where(
            c.queue == queue,
            c.settled_at < settled_before,
            c.status.in_([s.value for s in TERMINAL]),
        )
        with self.engine.begin() as conn:
            return int(conn.execute(query).rowcount)


def normalise_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 (not SQLAlchemy's default driver, psycopg2)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url
