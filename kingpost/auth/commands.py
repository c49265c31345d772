"""``kingpost keys create|list|revoke`` over a keys file, or a store given by the caller.

Here the store is ``--keys-file`` (default ``$KINGPOST_KEYS_FILE`` or
``./kingpost-keys.yaml``); the platform adds its own options (``--platform URL``,
``--home``, ``--state``) through ``store_options`` and hands ``keys_command``
its store. The options are taken before or after the action.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from kingpost.auth.keyfile import FileKeyStore
from kingpost.auth.keys import SCOPES, KeySpec, KeyStore, KeyStoreError, UnknownKeyError
from kingpost.errors import ConfigError

DEFAULT_KEYS_FILE = "kingpost-keys.yaml"
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_expiry(text: str, now: float | None = None) -> float:
    """``30d``, ``12h``, ``90m`` from now, or an ISO 8601 date/time (UTC if no zone)."""
    now = time.time() if now is None else now
    match = _DURATION.match(text.strip())
    if match:
        return now + float(match[1]) * _UNIT_SECONDS[match[2]]
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"--expires takes 30d, 12h or an ISO date, not {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def add_keys_command(
    commands: Callable[..., argparse.ArgumentParser],
    store_options: Callable[[argparse.ArgumentParser], None] | None = None,
) -> None:
    """Add ``keys`` to the ``kingpost`` command (``commands`` is ``add_parser``)."""
    where = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    where.add_argument("--keys-file", type=Path, help="a keys file, for kingpost serve")
    if store_options is not None:
        store_options(where)
    keys = commands("keys", help="create, list and revoke API keys", parents=[where])
    actions = keys.add_subparsers(dest="keys_command", required=True)
    create = actions.add_parser("create", help="make a key; it is shown once", parents=[where])
    create.add_argument("--name", default="")
    create.add_argument("--scope", action="append", choices=SCOPES, help="repeatable")
    create.add_argument("--model", action="append", default=[], help="limit to this model")
    create.add_argument("--environment", action="append", default=[], help="limit to this one")
    create.add_argument("--expires", help="30d, 12h, or an ISO date")
    create.add_argument("--rate", type=float, help="requests per second")
    create.add_argument("--concurrency", type=int, help="requests at once")
    actions.add_parser("list", help="the keys (never their secret)", parents=[where])
    revoke = actions.add_parser("revoke", help="stop a key working", parents=[where])
    revoke.add_argument("id")


def keys_file(args: argparse.Namespace) -> Path:
    default = Path(os.environ.get("KINGPOST_KEYS_FILE", DEFAULT_KEYS_FILE))
    return Path(getattr(args, "keys_file", default))


def keys_command(args: argparse.Namespace, store: KeyStore | None = None) -> int:
    try:
        store = store or FileKeyStore(keys_file(args))
        if args.keys_command == "create":
            spec = KeySpec(
                name=args.name,
                scopes=frozenset(args.scope or ("invoke",)),
                models=frozenset(args.model),
                environments=frozenset(args.environment),
                expires_at=parse_expiry(args.expires) if args.expires else None,
                rate=args.rate,
                concurrency=args.concurrency,
            )
            key, record = store.create(spec)
            print(key)
            print(f"id {record.id}: shown once, only its hash is kept", file=sys.stderr)
        elif args.keys_command == "list":
            for record in store.list():
                print(orjson.dumps(record.public()).decode())
        elif args.keys_command == "revoke":
            record = store.revoke(args.id)
            print(f"revoked {record.id}")
    except (ConfigError, KeyStoreError, UnknownKeyError, ValueError, OSError) as exc:
        print(f"kingpost: {exc}", file=sys.stderr)
        return 2
    return 0
