"""The ``kingpost`` command: parses arguments, builds options, calls into the package."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from kingpost.errors import KingpostError
from kingpost.logs import configure_logging
from kingpost.model.secrets import DEFAULT_SECRETS_DIR

if TYPE_CHECKING:
    from kingpost.auth.settings import KeySettings
    from kingpost.connection import ConnectionLimits
    from kingpost.serve import ServeOptions


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kingpost", description="Serve a model directory.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve a model directory over HTTP")
    serve.add_argument("model_dir", type=Path, help="directory with config.yaml and model/")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument(
        "--dev",
        action="store_true",
        help="put exception details in 500 bodies, and serve the playground at /playground",
    )
    serve.add_argument("--environment", default=None, help="environment name handed to the model")
    serve.add_argument("--secrets-dir", type=Path, default=DEFAULT_SECRETS_DIR)
    serve.add_argument("--graceful-timeout", type=float, default=30.0)
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--log-format", choices=("text", "json"), default="text")
    serve.add_argument("--no-access-log", action="store_true")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes sharing the port, each loading the model (Linux; CPU models)",
    )
    install = serve.add_mutually_exclusive_group()
    install.add_argument(
        "--install",
        action="store_true",
        help="serve from an environment of the model's own with its requirements (cached)",
    )
    install.add_argument(
        "--install-in-place",
        action="store_true",
        help="install the model's requirements into the environment Kingpost runs in",
    )
    serve.add_argument(
        "--load-retries",
        type=int,
        default=1,
        help="times a failing load() is called again before the server exits (default 1)",
    )
    serve.add_argument(
        "--load-retry-delay", type=float, default=1.0, help="seconds before each retry"
    )
    serve.add_argument(
        "--watch", action="store_true", help="reload the model when files in model_dir change"
    )
    serve.add_argument("--ssl-certfile", type=Path, help="serve HTTPS with this certificate")
    serve.add_argument("--ssl-keyfile", type=Path, help="the certificate's private key")
    limits = serve.add_argument_group("what one client may hold")
    limits.add_argument("--max-header-bytes", type=int, default=64 * 1024)
    limits.add_argument("--max-header-fields", type=int, default=100)
    limits.add_argument("--header-timeout", type=float, default=10.0, help="seconds (408)")
    limits.add_argument("--body-timeout", type=float, default=30.0, help="seconds idle (408)")
    limits.add_argument("--keep-alive-timeout", type=float, default=5.0)
    from kingpost.auth.settings import add_key_arguments

    add_key_arguments(serve)

    ray = serve.add_argument_group("Ray Serve (needs the ray extra: pip install 'kingpost[ray]')")
    ray.add_argument("--ray", action="store_true", help="run the model as a Ray Serve application")
    ray.add_argument(
        "--ray-address",
        default=None,
        help="an existing cluster (auto, HOST:PORT, ray://HOST:10001); default: start one",
    )
    ray.add_argument(
        "--replicas", default="1", help="N replicas, or MIN:MAX to autoscale (MIN 0: to zero)"
    )
    ray.add_argument(
        "--autoscaling",
        action="append",
        metavar="KEY=VALUE",
        help="autoscaling_window, scale_down_delay, concurrency_target, "
        "target_utilization_percentage (seconds, requests, percent)",
    )
    ray.add_argument(
        "--ray-http",
        choices=("kingpost", "serve"),
        default="kingpost",
        help="who answers HTTP: Kingpost's front process (fast) or Ray Serve's proxy",
    )
    ray.add_argument(
        "--ray-dashboard", action="store_true", help="start Ray's dashboard (on 127.0.0.1)"
    )

    init = commands.add_parser("init", help="create a model directory that serves as is")
    init.add_argument("model_dir", type=Path)
    init.add_argument(
        "--openai", action="store_true", help="implement the OpenAI and Anthropic /v1 methods"
    )

    predict = commands.add_parser("predict", help="call a running server")
    predict.add_argument("--url", default="http://127.0.0.1:8080", help="server or route URL")
    body = predict.add_mutually_exclusive_group()
    body.add_argument("-d", "--data", help="JSON request body")
    body.add_argument("-f", "--file", help="file with the JSON request body ('-' for stdin)")
    predict.add_argument("--stream", action="store_true", help="print chunks as they arrive")
    predict.add_argument("--timeout", type=float, default=1200.0)
    predict.add_argument("--api-key", metavar="KEY", help="the server's key ($KINGPOST_API_KEY)")
    add_async_commands(commands)

    from kingpost.auth.commands import add_keys_command
    from kingpost.platform.commands import add_commands, add_key_store_arguments

    add_keys_command(commands.add_parser, add_key_store_arguments)
    add_commands(commands)
    return parser


def add_async_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    queue = commands.add_parser("async", help="queue requests and fetch their results")
    actions = queue.add_subparsers(dest="action", required=True)
    url_help = "server URL (for submit, a platform target such as .../environments/staging)"
    submit = actions.add_parser("submit", help="queue a request; prints its request id")
    submit.add_argument("--url", default="http://127.0.0.1:8080", help=url_help)
    submit.add_argument("--api-key", metavar="KEY", help="the server's key ($KINGPOST_API_KEY)")
    body = submit.add_mutually_exclusive_group(required=True)
    body.add_argument("-d", "--data", help="model_input as JSON")
    body.add_argument("-f", "--file", help="file with model_input as JSON ('-' for stdin)")
    submit.add_argument("--webhook", help="webhook_endpoint for the result")
    submit.add_argument("--priority", type=int, help="0 (first) to 2")
    submit.add_argument("--max-time-in-queue", type=int, help="seconds (10 to 259200)")
    submit.add_argument("--max-attempts", type=int, help="inference_retry_config.max_attempts")
    submit.add_argument("--wait", action="store_true", help="wait and print the result")
    submit.add_argument("--timeout", type=float, default=600.0, help="seconds --wait waits")
    for name, text in (
        ("status", "print a request's status"),
        ("cancel", "cancel a queued request"),
        ("result", "print a request's output"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("request_id")
        action.add_argument("--url", default="http://127.0.0.1:8080", help="server URL")
        action.add_argument("--api-key", metavar="KEY", help="the server's key ($KINGPOST_API_KEY)")
        if name == "result":
            action.add_argument("--wait", action="store_true", help="wait until it finishes")
            action.add_argument("--timeout", type=float, default=600.0)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        from kingpost.serve import serve

        configure_logging(args.log_level, args.log_format)
        if not args.model_dir.is_dir():
            print(f"kingpost: {args.model_dir} is not a directory", file=sys.stderr)
            return 2
        if args.install and not enter_model_environment(args.model_dir, argv):
            return 2
        if args.load_retries < 0 or args.load_retry_delay < 0:
            print(
                "kingpost: --load-retries and --load-retry-delay cannot be negative",
                file=sys.stderr,
            )
            return 2
        try:
            options = serve_options(args)
        except (KingpostError, ValueError) as exc:
            print(f"kingpost: {exc}", file=sys.stderr)
            return 2
        if options.workers < 1:
            print("kingpost: --workers must be at least 1", file=sys.stderr)
            return 2
        if args.ray or args.ray_address:
            return ray_command(options, args)
        return serve(options)
    if args.command == "init":
        return init_command(args.model_dir, args.openai)
    if args.command == "predict":
        return predict_command(args)
    if args.command == "keys":
        from kingpost.auth.commands import keys_command
        from kingpost.auth.keys import KeyStoreError
        from kingpost.platform.commands import key_store

        try:
            store = key_store(args)
        except KeyStoreError as exc:
            print(f"kingpost: {exc}", file=sys.stderr)
            return 2
        return keys_command(args, store)
    if args.command == "async":
        return async_command(args)
    from kingpost.platform.commands import COMMANDS, run

    if args.command in COMMANDS:
        configure_logging(getattr(args, "log_level", "warning"), "text")
        if args.command == "up":
            from kingpost.serve import platform_backends

            return run(args, platform_backends)
        return run(args)
    return 2


def serve_options(args: argparse.Namespace) -> ServeOptions:
    """The options of a parsed ``kingpost serve`` command line (ValueError if they clash)."""
    from kingpost.serve import ServeOptions
    from kingpost.server.lifecycle import LoadRetries

    keys, limits = serve_limits(args)
    return ServeOptions(
        model_dir=args.model_dir,
        host=args.host,
        port=args.port,
        dev=args.dev,
        access_log=not args.no_access_log,
        environment=args.environment,
        secrets_dir=args.secrets_dir,
        graceful_timeout=args.graceful_timeout,
        log_level=args.log_level,
        workers=args.workers,
        install=args.install_in_place,
        load_retries=LoadRetries(args.load_retries, args.load_retry_delay),
        watch=args.watch,
        keys=keys,
        limits=limits,
        keep_alive_timeout=args.keep_alive_timeout,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
    )


def serve_limits(args: argparse.Namespace) -> tuple[KeySettings, ConnectionLimits]:
    from kingpost.auth.settings import key_settings
    from kingpost.connection import ConnectionLimits

    if (args.ssl_certfile is None) != (args.ssl_keyfile is None):
        raise ValueError("--ssl-certfile and --ssl-keyfile go together")
    limits = ConnectionLimits(
        max_head_bytes=args.max_header_bytes,
        max_header_fields=args.max_header_fields,
        head_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
    )
    return key_settings(args), limits


def ray_command(options: ServeOptions, args: argparse.Namespace) -> int:
    from kingpost.errors import ConfigError

    if options.watch or options.workers > 1:
        print("kingpost: --ray does not combine with --watch or --workers", file=sys.stderr)
        return 2
    if importlib.util.find_spec("ray") is None:
        print("kingpost: --ray needs Ray Serve: pip install 'kingpost[ray]'", file=sys.stderr)
        return 2
    from kingpost.scale import ClusterOptions, RayServeOptions, Scaling, serve_on_ray

    try:
        scaling = Scaling.parse(args.replicas, args.autoscaling)
    except ConfigError as exc:
        print(f"kingpost: {exc}", file=sys.stderr)
        return 2
    cluster = ClusterOptions(
        address=args.ray_address,
        # Another cluster's nodes may not share this file system: ship the model with the job.
        working_dir=options.model_dir.resolve() if args.ray_address else None,
        dashboard=args.ray_dashboard,
        metrics_interval=scaling.metrics_interval if scaling.autoscale else None,
    )
    ray_options = RayServeOptions(
        cluster=cluster, scaling=scaling, log_format=args.log_format, http=args.ray_http
    )
    # Each replica builds its app with the same function `kingpost serve` uses.
    from kingpost.serve import build_app

    return serve_on_ray(options, ray_options, build_app)


def enter_model_environment(model_dir: Path, argv: list[str] | None) -> bool:
    """Re-run this command in the model's own environment; False if it cannot be built."""
    from kingpost.errors import KingpostError
    from kingpost.model.environment import serve_in_model_environment

    try:
        serve_in_model_environment(model_dir, sys.argv[1:] if argv is None else argv)
    except KingpostError as exc:
        logging.getLogger("kingpost").error("%s", exc)
        return False
    return True


def init_command(model_dir: Path, openai: bool) -> int:
    from kingpost.scaffold import ScaffoldError, create_model_dir

    try:
        create_model_dir(model_dir, openai=openai)
    except ScaffoldError as exc:
        print(f"kingpost: {exc}", file=sys.stderr)
        return 2
    print(f"created {model_dir}; serve it with: kingpost serve {model_dir} --watch")
    return 0


def predict_command(args: argparse.Namespace) -> int:
    from kingpost.client import PredictCall, read_body, run_predict

    try:
        body = read_body(args.data, args.file)
    except (OSError, ValueError) as exc:
        print(f"kingpost: the request body is not usable JSON: {exc}", file=sys.stderr)
        return 2
    return run_predict(PredictCall(args.url, body, args.stream, args.timeout, args.api_key))


if __name__ == "__main__":
    sys.exit(main())


def async_command(args: argparse.Namespace) -> int:
    import orjson

    from kingpost.async_queue.client import AsyncCall, run_async
    from kingpost.client import read_body

    call = AsyncCall(args.action, url=args.url, request_id=getattr(args, "request_id", None))
    call.api_key = args.api_key
    call.wait = getattr(args, "wait", False)
    call.timeout = getattr(args, "timeout", 600.0)
    if args.action == "submit":
        try:
            call.model_input = orjson.loads(read_body(args.data, args.file))
        except (OSError, ValueError) as exc:
            print(f"kingpost: model_input is not usable JSON: {exc}", file=sys.stderr)
            return 2
        options: dict[str, object] = {
            "webhook_endpoint": args.webhook,
            "priority": args.priority,
            "max_time_in_queue_seconds": args.max_time_in_queue,
        }
        if args.max_attempts is not None:
            options["inference_retry_config"] = {"max_attempts": args.max_attempts}
        call.options = {k: v for k, v in options.items() if v is not None}
    return run_async(call)
