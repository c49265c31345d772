"""A keys file: key records (hashes only) in YAML, shared by ``kingpost keys`` and ``serve``.

    keys:
      - id: 3k9x2mq7aa
        name: ci
        hash: sha256:5f0c...
        scopes: [invoke]
        environments: [production]
        expires_at: 1798761600.0
        revoked_at: null

``kingpost keys create|list|revoke --keys-file F`` edit it; a server started
with ``--keys-file F`` sees a change within a second (a revoked key stops
working without a restart). The file is written whole, atomically, mode 0600.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import yaml

from kingpost.auth.keys import (
    SCOPES,
    ApiKey,
    KeySpec,
    MemoryKeyStore,
    UnknownKeyError,
    new_key,
)
from kingpost.errors import ConfigError

RECHECK_SECONDS = 1.0


class FileKeyStore:
    """Key records kept in a YAML file, re-read when it changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._memory = MemoryKeyStore()
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._load()

    async def candidates(self, key_id: str | None) -> Sequence[ApiKey]:
        now = time.monotonic()
        if now - self._checked >= RECHECK_SECONDS:
            self._checked = now
            self._reload_if_changed()
        return await self._memory.candidates(key_id)

    def create(self, spec: KeySpec) -> tuple[str, ApiKey]:
        self._load()
        key, record = new_key(spec)
        self._memory.add(record)
        self._save()
        return key, record

    def list(self) -> list[ApiKey]:
        self._load()
        return self._memory.list()

    def revoke(self, key_id: str) -> ApiKey:
        self._load()
        record = self._memory.revoke(key_id)
        self._save()
        return record

    def __len__(self) -> int:
        return len(self._memory)

    def _stat(self) -> tuple[int, int] | None:
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return None
        return info.st_mtime_ns, info.st_size

    def _reload_if_changed(self) -> None:
        if self._stat() != self._stamp:
            # A half-edited file: keep serving the last good records.
            with contextlib.suppress(ConfigError):
                self._load()

    def _load(self) -> None:
        stamp = self._stat()
        records = [] if stamp is None else read_keys_file(self.path)
        self._memory = MemoryKeyStore(records)
        self._stamp = stamp

    def _save(self) -> None:
        entries = [_entry(record) for record in self._memory.list()]
        text = yaml.safe_dump({"keys": entries}, sort_keys=False)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".keys-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._stamp = self._stat()


def _entry(record: ApiKey) -> dict[str, Any]:
    entry = asdict(record)
    for name in ("scopes", "models", "environments"):
        entry[name] = sorted(entry[name])
    return entry


def read_keys_file(path: Path) -> list[ApiKey]:
    """The records in a keys file; ConfigError naming the problem if it is malformed."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"keys file {path}: {exc}") from None
    entries = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ConfigError(f"keys file {path}: expected a mapping with a 'keys' list")
    records = []
    for number, entry in enumerate(entries, 1):
        try:
            records.append(_record(entry))
        except (TypeError, ValueError, KeyError) as exc:
            raise ConfigError(f"keys file {path}: entry {number}: {exc}") from None
    return records


def _record(entry: Any) -> ApiKey:
    if not isinstance(entry, dict):
        raise TypeError("each entry must be a mapping")
    digest = str(entry["hash"])
    if not digest.startswith("sha256:") or len(digest) != 71:
        raise ValueError("hash must be 'sha256:' and 64 hex digits")
    scopes = frozenset(entry.get("scopes") or SCOPES)
    if not scopes <= set(SCOPES):
        raise ValueError(f"scopes must be some of {', '.join(SCOPES)}")
    record = ApiKey(id=str(entry["id"]), hash=digest.lower())
    return replace(
        record,
        name=str(entry.get("name") or ""),
        scopes=scopes,
        models=frozenset(map(str, entry.get("models") or ())),
        environments=frozenset(map(str, entry.get("environments") or ())),
        created_at=float(entry.get("created_at") or 0.0),
        expires_at=_optional_float(entry.get("expires_at")),
        revoked_at=_optional_float(entry.get("revoked_at")),
        rate=_optional_float(entry.get("rate")),
        concurrency=None if entry.get("concurrency") is None else int(entry["concurrency"]),
    )


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


__all__ = ["FileKeyStore", "UnknownKeyError", "read_keys_file"]
