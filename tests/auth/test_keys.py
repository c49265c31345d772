"""Key records: the key's form, only its hash kept, constant-time matching, scopes, expiry."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from kingpost.auth import (
    KEY_PREFIX,
    AuthenticationError,
    FileKeyStore,
    KeySpec,
    MemoryKeyStore,
    UnknownKeyError,
    hash_key,
    new_key,
    presented_key,
    static_key,
    verify_key,
)
from kingpost.auth.commands import parse_expiry


def verify(store: object, key: str | None) -> object:
    return asyncio.run(verify_key(store, key))  # type: ignore[arg-type]


def test_a_new_key_has_the_prefix_and_its_record_only_the_hash() -> None:
    key, record = new_key(KeySpec(name="ci"))
    assert key.startswith(KEY_PREFIX) and len(key) > 40
    assert record.hash == hash_key(key) and key not in repr(record)
    assert key.split("_")[2] not in str(record.public())


def test_the_right_key_finds_its_record_and_others_do_not() -> None:
    key, record = new_key()
    store = MemoryKeyStore([record, static_key("a-command-line-key-0001")])
    assert verify(store, key) == record
    assert verify(store, "a-command-line-key-0001").name == ""  # type: ignore[attr-defined]
    for wrong in (key[:-1] + ("A" if key[-1] != "A" else "B"), "kp_nothing", "x" * 40):
        with pytest.raises(AuthenticationError, match="not valid"):
            verify(store, wrong)
    with pytest.raises(AuthenticationError, match="required"):
        verify(store, None)


def test_a_revoked_or_expired_key_is_refused() -> None:
    store = MemoryKeyStore()
    revoked, record = store.create(KeySpec())
    store.revoke(record.id)
    expired, _ = store.create(KeySpec(expires_at=time.time() - 1))
    with pytest.raises(AuthenticationError, match="revoked"):
        verify(store, revoked)
    with pytest.raises(AuthenticationError, match="expired"):
        verify(store, expired)
    with pytest.raises(UnknownKeyError):
        store.revoke("nosuchkey0")


def test_scopes_models_and_environments_limit_a_key() -> None:
    _, record = new_key(
        KeySpec(scopes=frozenset({"async"}), models=frozenset({"m"}), environments=frozenset({"s"}))
    )
    assert "scope" in (record.refusal("invoke", "m", "s") or "")
    assert record.refusal("async", "m", "s") is None
    assert "model" in (record.refusal("async", "other", "s") or "")
    assert "environment" in (record.refusal("async", "m", "production") or "")
    _, admin = new_key(KeySpec(scopes=frozenset({"admin"})))
    assert admin.refusal("invoke", "any", None) is None


@pytest.mark.parametrize(
    ("headers", "key"),
    [
        ([(b"authorization", b"Bearer k1")], "k1"),
        ([(b"authorization", b"bearer k1")], "k1"),
        ([(b"authorization", b"Api-Key k1")], "k1"),
        ([(b"authorization", b"API-KEY  k1 ")], "k1"),
        ([(b"x-api-key", b"k1")], "k1"),
        ([(b"authorization", b"Basic a2V5"), (b"x-api-key", b"k1")], "k1"),
        ([(b"authorization", b"Bearer")], None),
        ([], None),
    ],
)
def test_each_header_form_carries_a_key(
    headers: list[tuple[bytes, bytes]], key: str | None
) -> None:
    assert presented_key(headers) == key


def test_a_keys_file_keeps_hashes_and_a_server_sees_revocation(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    cli = FileKeyStore(path)
    key, record = cli.create(KeySpec(name="team", environments=frozenset({"production"})))
    assert key not in path.read_text() and record.hash in path.read_text()
    assert path.stat().st_mode & 0o077 == 0
    server = FileKeyStore(path)
    assert verify(server, key) == record
    FileKeyStore(path).revoke(record.id)
    server._checked = 0.0  # the next check looks at the file again (it does so once a second)
    with pytest.raises(AuthenticationError, match="revoked"):
        verify(server, key)


def test_expiry_takes_durations_and_dates() -> None:
    assert parse_expiry("2d", now=100.0) == 100.0 + 2 * 86400
    assert parse_expiry("2030-01-01") == 1893456000.0
    with pytest.raises(ValueError, match="--expires"):
        parse_expiry("soon")


def test_the_keys_command_creates_lists_and_revokes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from kingpost.cli import main

    path = str(tmp_path / "keys.yaml")
    assert main(["keys", "--keys-file", path, "create", "--name", "ci", "--scope", "async"]) == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith(KEY_PREFIX) and key not in (tmp_path / "keys.yaml").read_text()
    assert main(["keys", "--keys-file", path, "list"]) == 0
    listed = capsys.readouterr().out
    assert '"name":"ci"' in listed and '"scopes":["async"]' in listed and key not in listed
    key_id = key.split("_")[1]
    assert main(["keys", "--keys-file", path, "revoke", key_id]) == 0
    assert main(["keys", "--keys-file", path, "revoke", "nosuchkey0"]) == 2
    with pytest.raises(AuthenticationError, match="revoked"):
        verify(FileKeyStore(tmp_path / "keys.yaml"), key)
