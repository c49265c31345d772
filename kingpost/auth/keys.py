"""API keys: making them, storing only their hash, and checking a presented one.

A key Kingpost makes looks like ``kp_3k9x2mq7aa_Vq8...`` (``kp_``, a public id,
``_``, 32 random characters). The id finds the record without a scan; the
secret part is never stored, only ``sha256:<hex>`` of the whole key, compared
in constant time. Keys are 190 random bits, so a fast hash is the right one:
a slow one would only slow every request. Keys given on the command line
(``--api-key``) may have any form; they are hashed the same way on start.

    key, record = new_key(name="ci", scopes={"invoke"})
    store = MemoryKeyStore([record])
    found = await verify_key(store, key)    # the record, or AuthenticationError
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import string
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

from kingpost.errors import AuthenticationError

KEY_PREFIX = "kp_"
SCOPES = ("invoke", "async", "admin")
Scope = Literal["invoke", "async", "admin"]
_ID_ALPHABET = string.ascii_lowercase + string.digits
_SECRET_ALPHABET = string.ascii_letters + string.digits
_ID_LENGTH = 10
_SECRET_LENGTH = 32
_ID_SHAPE = re.compile(rf"^[a-z0-9]{{{_ID_LENGTH}}}$")
_KEY_SHAPE = re.compile(rf"^{KEY_PREFIX}([a-z0-9]{{{_ID_LENGTH}}})_[A-Za-z0-9]+$")


class UnknownKeyError(LookupError):
    """No key with that id in the store (``kingpost keys revoke``)."""


class KeyStoreError(Exception):
    """The store could not be read or changed (the message says why)."""


@dataclass(frozen=True)
class ApiKey:
    """One key's record: everything but the key itself.

    ``models`` and ``environments`` empty mean any; ``rate`` is requests per
    second and ``concurrency`` requests at once, None for the server's default.
    """

    id: str
    hash: str
    name: str = ""
    scopes: frozenset[str] = frozenset(SCOPES)
    models: frozenset[str] = frozenset()
    environments: frozenset[str] = frozenset()
    created_at: float = 0.0
    expires_at: float | None = None
    revoked_at: float | None = None
    rate: float | None = None
    concurrency: int | None = None

    def problem(self, now: float) -> str | None:
        """Why this key cannot be used at ``now`` at all, or None."""
        if self.revoked_at is not None:
            return "the API key has been revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "the API key has expired"
        return None

    def refusal(self, scope: str, model: str | None, environment: str | None) -> str | None:
        """Why this key may not make a request of ``scope`` on this model, or None."""
        if scope not in self.scopes and "admin" not in self.scopes:
            return f"the API key lacks the '{scope}' scope"
        if self.models and model not in self.models:
            return f"the API key is not allowed to call the model '{model}'"
        if self.environments and environment not in self.environments:
            where = f"the environment '{environment}'" if environment else "this server"
            return f"the API key is not allowed to call {where}"
        return None

    def public(self) -> dict[str, object]:
        """The record as ``kingpost keys list`` shows it (no hash)."""
        return {
            "id": self.id,
            "name": self.name,
            "scopes": sorted(self.scopes),
            "models": sorted(self.models),
            "environments": sorted(self.environments),
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "revoked": self.revoked_at is not None,
        }


def hash_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def key_id_of(key: str) -> str | None:
    """The public id of a key in Kingpost's own form, else None."""
    match = _KEY_SHAPE.match(key)
    return match[1] if match else None


def _random(alphabet: str, length: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


@dataclass(frozen=True)
class KeySpec:
    """What ``kingpost keys create`` asks for."""

    name: str = ""
    scopes: frozenset[str] = frozenset({"invoke"})
    models: frozenset[str] = frozenset()
    environments: frozenset[str] = frozenset()
    expires_at: float | None = None
    rate: float | None = None
    concurrency: int | None = None

    def __post_init__(self) -> None:
        unknown = set(self.scopes) - set(SCOPES)
        if unknown or not self.scopes:
            raise ValueError(f"scopes must be some of {', '.join(SCOPES)}, not {sorted(unknown)}")


def new_key(spec: KeySpec | None = None) -> tuple[str, ApiKey]:
    """A fresh key (show it once) and the record to store."""
    spec = spec or KeySpec()
    key_id = _random(_ID_ALPHABET, _ID_LENGTH)
    key = f"{KEY_PREFIX}{key_id}_{_random(_SECRET_ALPHABET, _SECRET_LENGTH)}"
    record = ApiKey(
        id=key_id,
        hash=hash_key(key),
        name=spec.name,
        scopes=spec.scopes,
        models=spec.models,
        environments=spec.environments,
        created_at=time.time(),
        expires_at=spec.expires_at,
        rate=spec.rate,
        concurrency=spec.concurrency,
    )
    return key, record


def static_key(key: str, name: str = "") -> ApiKey:
    """The record for a key given as is (``--api-key``, ``KINGPOST_API_KEYS``): every scope."""
    key_id = key_id_of(key) or "static-" + hash_key(key)[7:19]
    return ApiKey(id=key_id, hash=hash_key(key), name=name, created_at=time.time())


class KeyStore(Protocol):
    """Where key records live. ``kingpost serve`` uses a MemoryKeyStore or FileKeyStore;
    the platform implements the same four methods over its state store.

    ``candidates`` is on the request path: it must not block the event loop
    (keep a snapshot in memory, refresh it off the path).
    """

    async def candidates(self, key_id: str | None) -> Sequence[ApiKey]:
        """The records a key with this public id may match (id None: the keys without one)."""
        ...

    def create(self, spec: KeySpec) -> tuple[str, ApiKey]: ...

    def list(self) -> list[ApiKey]: ...

    def revoke(self, key_id: str) -> ApiKey: ...


class MemoryKeyStore:
    """Key records held in memory (``--api-key``, ``KINGPOST_API_KEYS``, tests)."""

    def __init__(self, records: Iterable[ApiKey] = ()) -> None:
        self._by_id: dict[str, ApiKey] = {}
        self._anonymous: list[ApiKey] = []
        for record in records:
            self.add(record)

    def add(self, record: ApiKey) -> None:
        self._by_id[record.id] = record
        self._reindex()

    def _reindex(self) -> None:
        # A key not in Kingpost's form cannot name its record: it is compared with these.
        self._anonymous = [r for r in self._by_id.values() if not _ID_SHAPE.match(r.id)]

    def __len__(self) -> int:
        return len(self._by_id)

    async def candidates(self, key_id: str | None) -> Sequence[ApiKey]:
        return self._candidates(key_id)

    def _candidates(self, key_id: str | None) -> Sequence[ApiKey]:
        record = self._by_id.get(key_id) if key_id is not None else None
        if record is not None:
            return [record, *self._anonymous]
        return self._anonymous

    def create(self, spec: KeySpec) -> tuple[str, ApiKey]:
        key, record = new_key(spec)
        self.add(record)
        return key, record

    def list(self) -> list[ApiKey]:
        return sorted(self._by_id.values(), key=lambda r: (r.created_at, r.id))

    def revoke(self, key_id: str) -> ApiKey:
        record = self._by_id.get(key_id)
        if record is None:
            raise UnknownKeyError(f"no API key with id {key_id!r}")
        if record.revoked_at is None:
            record = replace(record, revoked_at=time.time())
            self.add(record)
        return record


@dataclass
class ChainedKeyStore:
    """Several stores checked in order (command-line keys, then a keys file)."""

    stores: list[KeyStore] = field(default_factory=list)

    async def candidates(self, key_id: str | None) -> Sequence[ApiKey]:
        found: list[ApiKey] = []
        for store in self.stores:
            found.extend(await store.candidates(key_id))
        return found

    def create(self, spec: KeySpec) -> tuple[str, ApiKey]:
        return self.stores[-1].create(spec)

    def list(self) -> list[ApiKey]:
        return [record for store in self.stores for record in store.list()]

    def revoke(self, key_id: str) -> ApiKey:
        for store in self.stores:
            try:
                return store.revoke(key_id)
            except UnknownKeyError:
                continue
        raise UnknownKeyError(f"no API key with id {key_id!r}")


async def verify_key(store: KeyStore, presented: str | None, now: float | None = None) -> ApiKey:
    """The record ``presented`` matches; AuthenticationError if none or it is unusable.

    Every candidate is compared (no early exit), each in constant time.
    """
    if not presented:
        raise AuthenticationError("an API key is required")
    digest = hash_key(presented)
    match: ApiKey | None = None
    for record in await store.candidates(key_id_of(presented)):
        if hmac.compare_digest(record.hash, digest):
            match = record
    if match is None:
        raise AuthenticationError("the API key is not valid")
    problem = match.problem(time.time() if now is None else now)
    if problem is not None:
        raise AuthenticationError(problem)
    return match


def presented_key(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The key in ``Authorization: Bearer|Api-Key <key>`` or ``x-api-key`` (scheme any case)."""
    fallback = None
    for name, value in headers:
        if name == b"authorization":
            scheme, _, credentials = value.strip().partition(b" ")
            if scheme.lower() in (b"bearer", b"api-key") and credentials.strip():
                return credentials.strip().decode("latin-1")
        elif name == b"x-api-key" and value.strip():
            fallback = value.strip().decode("latin-1")
    return fallback


def basic_key(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The password of ``Authorization: Basic`` (what a browser sends after its prompt)."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, credentials = value.strip().partition(b" ")
            if scheme.lower() != b"basic":
                return None
            try:
                decoded = base64.b64decode(credentials.strip(), validate=True)
            except (binascii.Error, ValueError):
                return None
            return decoded.decode("latin-1").partition(":")[2] or None
    return None
