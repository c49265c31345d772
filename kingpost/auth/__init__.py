"""API keys for ``kingpost serve`` and the platform.

    store = MemoryKeyStore([static_key("a-long-random-key")])
    app = KeyGuard(model_app, store, model="model")

The store is an interface (``KeyStore``): ``MemoryKeyStore`` for keys given on
the command line, ``FileKeyStore`` for a keys file, and the platform's own over
its state store. See ``keys.py`` for the key format and hashing.
"""

from kingpost.auth.guard import (
    OPENABLE,
    KeyGuard,
    RouteAccess,
    classify_path,
    classify_request,
    path_dialect,
    refusal,
    route_dialects,
)
from kingpost.auth.keyfile import FileKeyStore, read_keys_file
from kingpost.auth.keys import (
    KEY_PREFIX,
    SCOPES,
    ApiKey,
    ChainedKeyStore,
    KeySpec,
    KeyStore,
    KeyStoreError,
    MemoryKeyStore,
    UnknownKeyError,
    hash_key,
    new_key,
    presented_key,
    static_key,
    verify_key,
)
from kingpost.errors import AuthenticationError, PermissionDeniedError

__all__ = [
    "KEY_PREFIX",
    "OPENABLE",
    "SCOPES",
    "ApiKey",
    "AuthenticationError",
    "ChainedKeyStore",
    "FileKeyStore",
    "KeyGuard",
    "KeySpec",
    "KeyStore",
    "KeyStoreError",
    "MemoryKeyStore",
    "PermissionDeniedError",
    "RouteAccess",
    "UnknownKeyError",
    "classify_path",
    "classify_request",
    "hash_key",
    "new_key",
    "path_dialect",
    "presented_key",
    "read_keys_file",
    "refusal",
    "route_dialects",
    "static_key",
    "verify_key",
]
