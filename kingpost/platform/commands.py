"""The platform's ``kingpost`` commands: their arguments, and what each prints.

``up`` runs the platform; every other command calls a running platform's admin
API (``--platform URL`` or ``$KINGPOST_PLATFORM``, default
http://127.0.0.1:8080; once the platform has keys, with an admin key from
``--api-key`` or ``$KINGPOST_API_KEY``), prints a table, or JSON with ``--json``.
``kingpost keys`` reaches the platform's keys through the same admin API
(``--platform URL``) or, with ``--home DIR`` / ``--state URL``, in its state
store directly (to make the first key before ``kingpost up`` listens beyond
loopback).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import yaml

from kingpost.auth.keys import KeyStore, KeyStoreError
from kingpost.errors import RequestError
from kingpost.limits import Quota
from kingpost.platform.client import (
    KEY_VARIABLE,
    AdminClient,
    AdminError,
    AdminKeyStore,
    platform_url,
    render_table,
)

if TYPE_CHECKING:
    from kingpost.platform.up import BackendPlugins

COMMANDS = frozenset(
    {
        "up",
        "deploy",
        "promote",
        "models",
        "deployments",
        "environments",
        "autoscaling",
        "deactivate",
        "activate",
        "logs",
        "wake",
        "apply",
    }
)
MODEL_COLUMNS = [
    ("name", "name"),
    ("id", "id"),
    ("environments", "environments"),
    ("development", "development"),
    ("deployments", "deployments"),
]
DEPLOYMENT_COLUMNS = [
    ("id", "id"),
    ("model", "model"),
    ("status", "status"),
    ("environments", "environments"),
    ("replicas", "replicas"),
    ("ready", "ready"),
    ("dev", "development"),
    ("source", "source"),
]
ENVIRONMENT_COLUMNS = [
    ("model", "model"),
    ("environment", "name"),
    ("deployment", "deployment_id"),
    ("replicas", "replicas"),
    ("autoscaling", "autoscaling"),
    ("promotion", "promotion"),
]
PROMOTION_COLUMNS = [(key, key) for key in ("deployment_id", "environment", "state", "share")]
AUTOSCALING_FLAGS = {
    "min_replica": int,
    "max_replica": int,
    "concurrency_target": int,
    "target_utilization_percentage": int,
    "autoscaling_window": float,
    "scale_down_delay": float,
}


def add_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    up = commands.add_parser("up", help="run the platform: many models behind one address")
    up.add_argument("file", nargs="?", type=Path, help="kingpost.yaml (default: ./kingpost.yaml)")
    up.add_argument("--host", default="127.0.0.1", help="beyond loopback only with a key")
    up.add_argument("--port", type=int, default=8080)
    up.add_argument("--home", type=Path, default=None, help="state, deployments, logs")
    up.add_argument("--state", default=None, help="postgresql://... to share state")
    up.add_argument("--park-timeout", type=float, default=None)
    up.add_argument("--park-limit", type=int, default=None)
    up.add_argument("--log-level", default="info")
    up.add_argument(
        "--backend",
        choices=["process", "ray"],
        default=None,
        help="where environments that name none run their replicas (default: process)",
    )
    up.add_argument(
        "--ray-address",
        default=None,
        help="the Ray cluster of the ray backend (auto, HOST:PORT, ray://HOST:PORT; "
        "default: a local one on 127.0.0.1)",
    )
    up.add_argument(
        "--no-playground",
        dest="playground",
        action="store_false",
        help="do not serve /playground and /docs (the admin's pages)",
    )
    keys = up.add_argument_group("API keys")
    keys.add_argument(
        "--api-key",
        action="append",
        default=[],
        metavar="KEY",
        help="accept this key, every scope (repeatable; also $KINGPOST_API_KEYS), beside "
        "the keys of `kingpost keys`",
    )
    keys.add_argument("--key-rate", type=float, help="requests per second per key")
    keys.add_argument("--key-concurrency", type=int, help="requests at once per key")
    keys.add_argument(
        "--insecure-no-keys",
        action="store_true",
        help="listen beyond loopback although no key exists (every route open)",
    )
    up.add_argument("--ssl-certfile", type=Path, help="serve HTTPS with this certificate")
    up.add_argument("--ssl-keyfile", type=Path, help="the certificate's private key")

    def client_command(name: str, help: str) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help)
        add_admin_arguments(parser)
        parser.add_argument("--json", action="store_true", help="print JSON")
        return parser

    deploy = client_command("deploy", "deploy a model directory to the platform")
    deploy.add_argument("model_dir", type=Path)
    deploy.add_argument("--model", default=None, help="model name (default: config's model_name)")
    target = deploy.add_mutually_exclusive_group()
    target.add_argument("--environment", default=None, help="promote it to this environment")
    target.add_argument("--promote", action="store_true", help="promote it to production")
    deploy.add_argument("--rolling", action="store_true")
    deploy.add_argument("--dev", action="store_true", help="the development deployment (watched)")
    deploy.add_argument("--no-wait", action="store_true")

    promote = client_command("promote", "promote a deployment to an environment")
    promote.add_argument("deployment")
    promote.add_argument("--environment", default="production")
    promote.add_argument("--rolling", action="store_true")
    promote.add_argument("--keep-previous", action="store_true", help="do not scale it down")
    promote.add_argument("--step-percent", type=float, default=None)
    promote.add_argument("--step-interval", type=float, default=None)
    promote.add_argument("--no-wait", action="store_true")
    steer = promote.add_mutually_exclusive_group()
    for action in ("pause", "resume", "cancel", "force"):
        steer.add_argument(
            f"--{action}",
            dest="action",
            action="store_const",
            const=action,
            help=f"{action} the rolling promotion of DEPLOYMENT under way",
        )

    client_command("models", "list models")
    deployments = client_command("deployments", "list deployments")
    deployments.add_argument("model", nargs="?")
    environments = client_command("environments", "list, create or delete environments")
    environments.add_argument("model", nargs="?")
    change = environments.add_mutually_exclusive_group()
    change.add_argument("--create", metavar="NAME")
    change.add_argument("--delete", metavar="NAME")

    autoscaling = client_command("autoscaling", "show or change an environment's autoscaling")
    autoscaling.add_argument("model")
    autoscaling.add_argument("environment")
    for flag, kind in AUTOSCALING_FLAGS.items():
        autoscaling.add_argument("--" + flag.replace("_", "-"), type=kind, default=None)

    for name in ("deactivate", "activate"):
        parser = client_command(name, f"{name} a deployment")
        parser.add_argument("deployment")
    logs = client_command("logs", "print a deployment's log")
    logs.add_argument("deployment")
    logs.add_argument("--follow", "-f", action="store_true")
    logs.add_argument("--tail", type=int, default=200)
    wake = client_command("wake", "start a scaled-to-zero environment without a request")
    wake.add_argument("model")
    wake.add_argument("environment")
    apply = client_command("apply", "apply a kingpost.yaml to a running platform")
    apply.add_argument("file", type=Path)


def add_admin_arguments(
    parser: argparse.ArgumentParser,
    default: Any = None,
    where: str = "admin URL ($KINGPOST_PLATFORM)",
) -> None:
    """Where a command finds the admin API, and the key it sends there."""
    parser.add_argument("--platform", default=default, help=where)
    parser.add_argument(
        "--api-key", default=default, metavar="KEY", help=f"an admin key (${KEY_VARIABLE})"
    )


def add_key_store_arguments(parser: argparse.ArgumentParser) -> None:
    """``kingpost keys``: the platform's keys, through its admin API or in its state."""
    add_admin_arguments(parser, argparse.SUPPRESS, "the keys of the platform at this admin URL")
    parser.add_argument("--home", type=Path, help="the platform's home (its state.db)")
    parser.add_argument("--state", help="the platform's postgresql:// state")


def key_store(args: argparse.Namespace) -> KeyStore | None:
    """The store ``kingpost keys`` works on: None for the keys file (``--keys-file``)."""
    if getattr(args, "platform", None):
        client = AdminClient(platform_url(args.platform), api_key=getattr(args, "api_key", None))
        return AdminKeyStore(client)
    home, state = getattr(args, "home", None), getattr(args, "state", None)
    if home is None and state is None:
        return None
    from sqlalchemy.exc import SQLAlchemyError

    from kingpost.platform.keystore import PlatformKeyStore
    from kingpost.platform.settings import DEFAULT_HOME, PlatformOptions
    from kingpost.platform.store import StateStore

    options = PlatformOptions(home=(home or DEFAULT_HOME).expanduser(), state_url=state)
    try:
        if state is None:
            options.home.mkdir(parents=True, exist_ok=True)
        return PlatformKeyStore(StateStore(options.database_url))
    except (OSError, SQLAlchemyError) as exc:
        raise KeyStoreError(f"cannot open the platform's state: {exc}") from None


def run(args: argparse.Namespace, backends: BackendPlugins | None = None) -> int:
    """Run a platform command; ``backends`` adds replica backends to ``up`` (the ray one)."""
    if args.command == "up":
        return _up(args, backends)
    handler = _HANDLERS[args.command]
    try:
        with AdminClient(platform_url(args.platform), api_key=args.api_key) as client:
            return handler(client, args)
    except (AdminError, RequestError) as exc:
        print(f"kingpost: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _up(args: argparse.Namespace, backends: BackendPlugins | None) -> int:
    from kingpost.auth.settings import KeySettings
    from kingpost.errors import ConfigError, InvalidRequestError
    from kingpost.platform.declarative import DEFAULT_FILE, load_file
    from kingpost.platform.settings import DEFAULT_HOME, PlatformOptions
    from kingpost.platform.up import run_platform

    if (args.ssl_certfile is None) != (args.ssl_keyfile is None):
        print("kingpost: --ssl-certfile and --ssl-keyfile go together", file=sys.stderr)
        return 2
    try:
        keys = KeySettings.from_sources(
            api_keys=args.api_key, rate=args.key_rate, concurrency=args.key_concurrency
        )
    except (ConfigError, ValueError) as exc:
        print(f"kingpost: {exc}", file=sys.stderr)
        return 2

    file = (
        args.file if args.file is not None else (DEFAULT_FILE if DEFAULT_FILE.is_file() else None)
    )
    options = PlatformOptions(
        home=(args.home or DEFAULT_HOME).expanduser().resolve(),
        host=args.host,
        port=args.port,
        state_url=args.state,
        file=file,
        log_level=args.log_level,
        playground=args.playground,
        api_keys=keys.api_keys,
        insecure_no_keys=args.insecure_no_keys,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
    )
    if file is not None:
        try:
            section = load_file(file).platform
        except InvalidRequestError as exc:
            print(f"kingpost: {exc}", file=sys.stderr)
            return 2
        for key, value in section.model_dump(exclude_none=True).items():
            if key == "key_quota":
                options.key_quota = Quota(**value)
            elif key == "model_quotas":
                options.model_quotas = {name: Quota(**q) for name, q in value.items()}
            else:
                setattr(options, key, value)
    if keys.quota.limited:  # the flags win over the file
        rate, concurrency = options.key_quota.rate, options.key_quota.concurrency
        options.key_quota = Quota(
            rate=rate if args.key_rate is None else args.key_rate,
            burst=options.key_quota.burst,
            concurrency=concurrency if args.key_concurrency is None else args.key_concurrency,
        )
    if args.park_timeout is not None:
        options.park_timeout = args.park_timeout
    if args.park_limit is not None:
        options.park_limit = args.park_limit
    if args.backend is not None:
        options.backend = args.backend
    if args.ray_address is not None:
        options.ray_address = args.ray_address
    return run_platform(options, backends)


def _print(args: argparse.Namespace, data: Any, columns: list[tuple[str, str]]) -> int:
    if args.json:
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        rows = data if isinstance(data, list) else [data]
        print(render_table(rows, columns))
    return 0


def _progress(args: argparse.Namespace) -> Callable[[str, float], None] | None:
    if args.json:
        return None
    return lambda status, elapsed: print(f"  {elapsed:6.2f} s  {status}", file=sys.stderr)


def _deploy(client: AdminClient, args: argparse.Namespace) -> int:
    name = args.model or default_model_name(args.model_dir)
    if not args.json:
        print(f"  {0:6.2f} s  copying {args.model_dir}", file=sys.stderr)
    record = client.deploy(
        args.model_dir,
        name,
        environment=args.environment,
        promote=args.promote,
        rolling=args.rolling,
        dev=args.dev,
    )
    if not args.json:
        print(record["id"])
    environment = args.environment or ("production" if args.promote else None)
    if not args.no_wait:
        record = client.wait_deployed(record["id"], environment, progress=_progress(args))
    if args.json:
        return _print(args, record, DEPLOYMENT_COLUMNS)
    return 0


def _promote(client: AdminClient, args: argparse.Namespace) -> int:
    if args.action is not None:
        model = client.deployment(args.deployment)["model_id"]
        run = client.promotion(model, args.environment, args.action)
        return _print(args, run, PROMOTION_COLUMNS)
    run = client.promote(
        args.deployment,
        args.environment,
        rolling=args.rolling,
        scale_down_previous=not args.keep_previous,
        step_percent=args.step_percent,
        step_interval=args.step_interval,
    )
    if args.no_wait:
        return _print(args, run, PROMOTION_COLUMNS)
    promoted = str(run["deployment_id"])  # a new one when promoting the development one
    client.wait_deployed(promoted, args.environment, progress=_progress(args))
    model = client.deployment(promoted)["model_id"]
    return _environments_table(args, [client.environment(model, args.environment)])


def _models(client: AdminClient, args: argparse.Namespace) -> int:
    return _print(args, client.models(), MODEL_COLUMNS)


def _deployments(client: AdminClient, args: argparse.Namespace) -> int:
    return _print(args, client.deployments(args.model), DEPLOYMENT_COLUMNS)


def _environments(client: AdminClient, args: argparse.Namespace) -> int:
    if args.create or args.delete:
        if not args.model:
            raise AdminError("name the model: kingpost environments MODEL --create NAME")
        if args.create:
            client.create_environment(args.model, args.create)
        else:
            client.delete_environment(args.model, args.delete)
    models = [args.model] if args.model else [m["name"] for m in client.models()]
    return _environments_table(args, [env for m in models for env in client.environments(m)])


def _environments_table(args: argparse.Namespace, rows: list[dict[str, Any]]) -> int:
    if not args.json:  # short cells: "ready/replicas", "state deployment"
        for row in rows:
            replicas = row.get("replicas")
            if isinstance(replicas, dict):
                row["replicas"] = f"{replicas['ready']}/{replicas['replicas']}"
            promotion = row.get("promotion")
            if isinstance(promotion, dict):
                row["promotion"] = f"{promotion['state']} {promotion['deployment_id']}"
    return _print(args, rows, ENVIRONMENT_COLUMNS)


def _autoscaling(client: AdminClient, args: argparse.Namespace) -> int:
    changes = {
        key: getattr(args, key) for key in AUTOSCALING_FLAGS if getattr(args, key) is not None
    }
    settings = client.autoscaling(args.model, args.environment, changes)
    columns = [(key, key) for key in AUTOSCALING_FLAGS]
    return _print(args, settings, columns)


def _activate(client: AdminClient, args: argparse.Namespace) -> int:
    return _print(args, client.set_active(args.deployment, True), DEPLOYMENT_COLUMNS)


def _deactivate(client: AdminClient, args: argparse.Namespace) -> int:
    return _print(args, client.set_active(args.deployment, False), DEPLOYMENT_COLUMNS)


def _logs(client: AdminClient, args: argparse.Namespace) -> int:
    out = sys.stdout.buffer
    for chunk in client.logs(args.deployment, args.follow, args.tail):
        out.write(chunk)
        out.flush()
    return 0


def _wake(client: AdminClient, args: argparse.Namespace) -> int:
    return _print(
        args,
        client.wake(args.model, args.environment),
        [("status", "status"), ("deployment", "deployment_id")],
    )


def _apply(client: AdminClient, args: argparse.Namespace) -> int:
    from kingpost.errors import InvalidRequestError
    from kingpost.platform.declarative import apply_file

    done = []
    try:
        for line in apply_file(client, args.file):
            done.append(line)
            if not args.json:
                print(line)
    except InvalidRequestError as exc:
        raise AdminError(str(exc)) from None
    if args.json:
        sys.stdout.write(orjson.dumps({"applied": done}).decode() + "\n")
    elif not done:
        print("nothing to change")
    return 0


_HANDLERS: dict[str, Callable[[AdminClient, argparse.Namespace], int]] = {
    "deploy": _deploy,
    "promote": _promote,
    "models": _models,
    "deployments": _deployments,
    "environments": _environments,
    "autoscaling": _autoscaling,
    "activate": _activate,
    "deactivate": _deactivate,
    "logs": _logs,
    "wake": _wake,
    "apply": _apply,
}


def default_model_name(model_dir: Path) -> str:
    """config.yaml's ``model_name``, else the directory's name, made a valid model name."""
    name = None
    try:
        config = yaml.safe_load((model_dir / "config.yaml").read_text()) or {}
        name = config.get("model_name") if isinstance(config, dict) else None
    except (OSError, yaml.YAMLError):
        pass
    name = str(name or model_dir.resolve().name)
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-_")
    return cleaned[:63] or "model"
