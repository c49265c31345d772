"""The ``kingpost`` command: parses arguments, builds options, calls into the package."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kingpost.logs import configure_logging
from kingpost.model.secrets import DEFAULT_SECRETS_DIR


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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        from kingpost.server.runner import ServeOptions, serve

        configure_logging(args.log_level, args.log_format)
        if not args.model_dir.is_dir():
            print(f"kingpost: {args.model_dir} is not a directory", file=sys.stderr)
            return 2
        options = ServeOptions(
            model_dir=args.model_dir,
            host=args.host,
            port=args.port,
            dev=args.dev,
            access_log=not args.no_access_log,
            environment=args.environment,
            secrets_dir=args.secrets_dir,
            graceful_timeout=args.graceful_timeout,
            log_level=args.log_level,
        )
        return serve(options)
    return 2


if __name__ == "__main__":
    sys.exit(main())
