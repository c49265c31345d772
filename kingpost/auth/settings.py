"""Where a server's keys and quotas come from: ``--api-key``, ``KINGPOST_API_KEYS``, a keys file.

settings = KeySettings.from_sources(api_keys=["..."], environ=os.environ)
app = settings.guard(model_app, model="model")  # model_app itself when no key is set
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kingpost.auth.guard import OPENABLE, KeyGuard
from kingpost.auth.keyfile import FileKeyStore
from kingpost.auth.keys import ChainedKeyStore, KeyStore, MemoryKeyStore, static_key
from kingpost.errors import ConfigError
from kingpost.limits import Quota, Quotas
from kingpost.logs import register_secret
from kingpost.server.errors import ErrorDialect

ENV_KEYS = "KINGPOST_API_KEYS"
MIN_KEY_LENGTH = 16


@dataclass(frozen=True)
class KeySettings:
    """The keys and quotas of one server; ``enabled`` once any key source is given."""

    api_keys: tuple[str, ...] = ()
    keys_file: Path | None = None
    opened: frozenset[str] = frozenset()
    quota: Quota = field(default_factory=Quota)

    @classmethod
    def from_sources(
        cls,
        api_keys: Sequence[str] = (),
        keys_file: Path | None = None,
        opened: Collection[str] = (),
        rate: float | None = None,
        concurrency: int | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> KeySettings:
        """Gather keys; ConfigError for one too short to be a secret."""
        environ = os.environ if environ is None else environ
        keys = [*api_keys, *re.split(r"[\s,]+", environ.get(ENV_KEYS, "").strip())]
        keys = [key for key in keys if key]
        for key in keys:
            if len(key) < MIN_KEY_LENGTH:
                raise ConfigError(
                    f"an API key must be at least {MIN_KEY_LENGTH} characters "
                    f"(make one with: kingpost keys create)"
                )
        for key in keys:
            register_secret(key)
        unknown = set(opened) - set(OPENABLE)
        if unknown:
            raise ConfigError(f"--open takes {', '.join(OPENABLE)}, not {sorted(unknown)}")
        quota = Quota(rate=rate, concurrency=concurrency)
        return cls(tuple(keys), keys_file, frozenset(opened), quota)

    @property
    def enabled(self) -> bool:
        return bool(self.api_keys) or self.keys_file is not None

    def store(self) -> KeyStore:
        static = MemoryKeyStore(static_key(key, name="command line") for key in self.api_keys)
        if self.keys_file is None:
            return static
        return ChainedKeyStore([static, FileKeyStore(self.keys_file)])

    def guard(
        self,
        app: Callable[..., Any],
        model: str = "model",
        environment: str | None = None,
        store: KeyStore | None = None,
        dialect_of: Callable[[str], ErrorDialect] | None = None,
    ) -> Callable[..., Any]:
        """``app`` behind a KeyGuard, or ``app`` itself when no key is configured."""
        if not self.enabled and store is None:
            return app
        return KeyGuard(
            app,
            store or self.store(),
            model=model,
            environment=environment,
            quotas=Quotas(self.quota),
            opened=self.opened,
            dialect_of=dialect_of,
        )


def add_key_arguments(parser: argparse.ArgumentParser) -> None:
    """The key and quota options of ``kingpost serve``."""
    group = parser.add_argument_group("API keys")
    group.add_argument(
        "--api-key",
        action="append",
        default=[],
        metavar="KEY",
        help=f"require this key on every route but GET / (repeatable; also ${ENV_KEYS})",
    )
    group.add_argument("--keys-file", type=Path, help="key records made by `kingpost keys create`")
    group.add_argument(
        "--open",
        action="append",
        default=[],
        choices=OPENABLE,
        help="let this group of routes answer without a key (repeatable)",
    )
    group.add_argument("--key-rate", type=float, help="requests per second per key")
    group.add_argument("--key-concurrency", type=int, help="requests at once per key")


def key_settings(args: argparse.Namespace) -> KeySettings:
    return KeySettings.from_sources(
        api_keys=args.api_key,
        keys_file=args.keys_file,
        opened=args.open,
        rate=args.key_rate,
        concurrency=args.key_concurrency,
    )
