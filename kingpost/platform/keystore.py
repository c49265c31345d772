"""API keys in the platform's state store: ``kingpost keys`` for ``kingpost up``.

The records (hashes only, never a key) live in ``kingpost_api_keys`` beside the
models, in the SQLite file under ``--home`` or the shared PostgreSQL state, so
every platform process on one state checks the same keys. The request path
reads a snapshot in memory; ``watch()`` refreshes it when the store's key
generation moves (one small read a second), so a key revoked by any process,
or with ``kingpost keys --home`` while the platform runs, stops working within
about a second. Changes made through this object are seen at once.

    keys = PlatformKeyStore(StateStore("sqlite:///home/state.db"))
    key, record = keys.create(KeySpec(name="ci", scopes=frozenset({"invoke"})))
    await keys.candidates(record.id)   # [record]
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from kingpost.auth.keys import ApiKey, KeySpec, MemoryKeyStore, UnknownKeyError, new_key
from kingpost.platform.store import StateStore, meta_table, metadata

logger = logging.getLogger("kingpost.platform")

REFRESH_SECONDS = 1.0
_GENERATION = "keys"

keys_table = sa.Table(
    "kingpost_api_keys",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("hash", sa.String(80), nullable=False),
    sa.Column("name", sa.String(200), nullable=False, default=""),
    sa.Column("scopes", sa.Text, nullable=False),
    sa.Column("models", sa.Text, nullable=False),
    sa.Column("environments", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=True),
    sa.Column("revoked_at", sa.Float, nullable=True),
    sa.Column("rate", sa.Float, nullable=True),
    sa.Column("concurrency", sa.Integer, nullable=True),
)


class PlatformKeyStore:
    """``kingpost.auth.KeyStore`` over the platform's state store."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        keys_table.create(store.engine, checkfirst=True)
        try:
            with store.engine.begin() as conn:
                found = conn.execute(
                    sa.select(meta_table.c.value).where(meta_table.c.key == _GENERATION)
                ).first()
                if found is None:
                    conn.execute(sa.insert(meta_table).values(key=_GENERATION, value=0))
        except sa.exc.IntegrityError:
            pass  # another process made it first
        self._memory = MemoryKeyStore()
        self._generation = -1
        self.reload()

    # -- the request path --------------------------------------------------------

    async def candidates(self, key_id: str | None) -> Sequence[ApiKey]:
        return await self._memory.candidates(key_id)

    def __len__(self) -> int:
        """How many records exist, revoked ones included (any record turns keys on)."""
        return len(self._memory)

    def usable(self, now: float | None = None) -> int:
        """How many keys would be accepted now (neither revoked nor expired)."""
        moment = time.time() if now is None else now
        return sum(1 for record in self._memory.list() if record.problem(moment) is None)

    # -- kingpost keys -------------------------------------------------------------

    def create(self, spec: KeySpec) -> tuple[str, ApiKey]:
        key, record = new_key(self._canonical(spec))
        with self._write() as conn:
            conn.execute(sa.insert(keys_table).values(**_row(record)))
        self.reload()
        return key, record

    def list(self) -> list[ApiKey]:
        self.reload()
        return self._memory.list()

    def revoke(self, key_id: str) -> ApiKey:
        with self._write() as conn:
            row = conn.execute(sa.select(keys_table).where(keys_table.c.id == key_id)).first()
            if row is None:
                raise UnknownKeyError(f"no API key with id {key_id!r}")
            record = _record(row)
            if record.revoked_at is None:
                record = replace(record, revoked_at=time.time())
                conn.execute(
                    sa.update(keys_table)
                    .where(keys_table.c.id == key_id)
                    .values(revoked_at=record.revoked_at)
                )
        self.reload()
        return record

    def _canonical(self, spec: KeySpec) -> KeySpec:
        """Models named by id are kept by name: invocations are checked by name."""
        if not spec.models:
            return spec
        snapshot = self.store.snapshot()
        found = {name: snapshot.find_model(name) for name in spec.models}
        names = frozenset(model.name if model else name for name, model in found.items())
        return replace(spec, models=names)

    # -- keeping the snapshot fresh ------------------------------------------------

    def generation(self) -> int:
        with self.store.engine.connect() as conn:
            value = conn.execute(
                sa.select(meta_table.c.value).where(meta_table.c.key == _GENERATION)
            ).scalar()
        return int(value or 0)

    def reload(self) -> None:
        with self.store.engine.connect() as conn:
            generation = conn.execute(
                sa.select(meta_table.c.value).where(meta_table.c.key == _GENERATION)
            ).scalar()
            rows = conn.execute(sa.select(keys_table)).all()
        self._memory = MemoryKeyStore(_record(row) for row in rows)
        self._generation = int(generation or 0)

    def refresh(self) -> None:
        """Re-read the records if any process changed them since the last read."""
        if self.generation() != self._generation:
            self.reload()

    async def watch(self, interval: float = REFRESH_SECONDS) -> None:
        """Refresh every ``interval`` seconds, off the event loop, until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.refresh)
            except sa.exc.SQLAlchemyError as exc:  # keep the last good keys; say why
                logger.warning("could not re-read the API keys: %s", str(exc).splitlines()[0])

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """One transaction that also moves the key generation (other processes re-read)."""
        with self.store.engine.begin() as conn:
            yield conn
            conn.execute(
                sa.update(meta_table)
                .where(meta_table.c.key == _GENERATION)
                .values(value=meta_table.c.value + 1)
            )


def _row(record: ApiKey) -> dict[str, object]:
    return {
        "id": record.id,
        "hash": record.hash,
        "name": record.name,
        "scopes": orjson.dumps(sorted(record.scopes)).decode(),
        "models": orjson.dumps(sorted(record.models)).decode(),
        "environments": orjson.dumps(sorted(record.environments)).decode(),
        "created_at": record.created_at,
        "expires_at": record.expires_at,
        "revoked_at": record.revoked_at,
        "rate": record.rate,
        "concurrency": record.concurrency,
    }


def _record(row: Row[object]) -> ApiKey:
    return ApiKey(
        id=row.id,
        hash=row.hash,
        name=row.name,
        scopes=frozenset(orjson.loads(row.scopes)),
        models=frozenset(orjson.loads(row.models)),
        environments=frozenset(orjson.loads(row.environments)),
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        rate=row.rate,
        concurrency=row.concurrency,
    )
