"""The ``kingpost`` command: parses arguments, builds options, calls into the package."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from kingpost.logs import configure_logging
from kingpost.model.secrets import DEFAULT_SECRETS_DIR

if TYPE_CHECKING:
    from kingpost.serve import ServeOptions


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kingpost", description="Serve a model directory.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve a model directory over HTTP")
    serve.add_argument("model_dir", type=Path, help="directory with config.yaml and model/")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--dev", action="store_true", help="put exception details in 500 bodies")
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
    serve.add_argument(
        "--install", action="store_true", help="pip install the model's requirements first"
    )
    serve.add_argument(
        "--watch", action="store_true", help="reload the model when files in model_dir change"
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        from kingpost.serve import serve

        configure_logging(args.log_level, args.log_format)
        if not args.model_dir.is_dir():
            print(f"kingpost: {args.model_dir} is not a directory", file=sys.stderr)
            return 2
        options = serve_options(args)
        if options.workers < 1:
            print("kingpost: --workers must be at least 1", file=sys.stderr)
            return 2
        return serve(options)
    if args.command == "init":
        return init_command(args.model_dir, args.openai)
    if args.command == "predict":
        return predict_command(args)
    return 2


def serve_options(args: argparse.Namespace) -> ServeOptions:
    """The options of a parsed ``kingpost serve`` command line."""
    from kingpost.serve import ServeOptions

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
        install=args.install,
        watch=args.watch,
    )


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
    return run_predict(PredictCall(args.url, body, args.stream, args.timeout))


if __name__ == "__main__":
    sys.exit(main())
