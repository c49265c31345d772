"""The platform's keys in its state store: hashes only, and every process sees a revocation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from kingpost.auth import AuthenticationError, KeySpec, UnknownKeyError, verify_key
from kingpost.platform.keystore import PlatformKeyStore, keys_table
from kingpost.platform.settings import PlatformOptions
from kingpost.platform.store import StateStore
from tests.platform.conftest import postgres_database


def postgresql_url() -> str:
    url = PlatformOptions(state_url=postgres_database("kingpost_keys_test")).database_url
    engine = sa.create_engine(url)
    keys_table.drop(engine, checkfirst=True)  # a clean table for this run
    engine.dispose()
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    return postgresql_url()


@pytest.fixture
def stores(url: str) -> Iterator[tuple[PlatformKeyStore, PlatformKeyStore]]:
    """Two processes' views of one state."""
    first, second = StateStore(url), StateStore(url)
    try:
        yield PlatformKeyStore(first), PlatformKeyStore(second)
    finally:
        first.close()
        second.close()


def test_a_key_is_shown_once_and_only_its_hash_is_stored(
    stores: tuple[PlatformKeyStore, PlatformKeyStore],
) -> None:
    keys, _ = stores
    key, record = keys.create(KeySpec(name="ci", scopes=frozenset({"invoke", "async"})))
    assert key.startswith(f"kp_{record.id}_")
    with keys.store.engine.connect() as conn:
        rows = [dict(row._mapping) for row in conn.execute(sa.select(keys_table))]
    assert [row["hash"] for row in rows] == [record.hash]
    assert all(key.split("_")[2] not in str(value) for row in rows for value in row.values())
    found = asyncio.run(verify_key(keys, key))
    assert found.scopes == {"invoke", "async"} and found.name == "ci"
    with pytest.raises(AuthenticationError):
        asyncio.run(verify_key(keys, key + "x"))


def test_a_revocation_by_one_process_reaches_the_other_at_its_next_refresh(
    stores: tuple[PlatformKeyStore, PlatformKeyStore],
) -> None:
    first, second = stores
    key, record = first.create(KeySpec())
    second.refresh()
    assert asyncio.run(verify_key(second, key)).id == record.id
    first.revoke(record.id)
    assert asyncio.run(verify_key(second, key))  # its snapshot is not re-read on the path
    second.refresh()
    with pytest.raises(AuthenticationError, match="revoked"):
        asyncio.run(verify_key(second, key))
    assert [r.revoked_at is not None for r in second.list()] == [True]
    assert len(second) == 1 and second.usable() == 0  # a revoked key keeps keys on


def test_watch_refreshes_within_its_interval(
    stores: tuple[PlatformKeyStore, PlatformKeyStore],
) -> None:
    first, second = stores

    async def scenario() -> float:
        watcher = asyncio.create_task(second.watch(interval=0.05))
        try:
            _, record = await asyncio.to_thread(first.create, KeySpec())
            started = time.monotonic()
            while not await second.candidates(record.id):
                assert time.monotonic() - started < 5, "the new key was never seen"
                await asyncio.sleep(0.02)
            return time.monotonic() - started
        finally:
            watcher.cancel()

    assert asyncio.run(scenario()) < 2


def test_a_model_named_by_id_is_kept_by_name(tmp_path: Path) -> None:
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        model = store.create_model("echo")
        keys = PlatformKeyStore(store)
        _, record = keys.create(KeySpec(models=frozenset({model.id, "not-yet"})))
        assert record.models == {"echo", "not-yet"}
        with pytest.raises(UnknownKeyError):
            keys.revoke("nosuchkey0")
    finally:
        store.close()
