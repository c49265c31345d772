"""``python serve_async.py MODEL_DIR --port N``: a model server with async inference.

Used by the end-to-end tests until ``kingpost serve`` mounts the async routes itself.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import uvicorn

from kingpost.async_queue.app import AsyncQueueApp
from kingpost.logs import configure_logging
from kingpost.server.runner import ServeOptions, bind_socket, build_app, new_event_loop


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    configure_logging("info", "text")
    model_app = build_app(ServeOptions(model_dir=args.model_dir, port=args.port))
    app = AsyncQueueApp.build(
        model_app,
        model_app.source.config,
        args.model_dir.name,
        ready=lambda: model_app.lifecycle.loaded and not model_app.draining,
    )
    config = uvicorn.Config(
        app, lifespan="on", access_log=False, log_config=None, http="httptools", loop="uvloop"
    )
    server = uvicorn.Server(config)
    sock = bind_socket("127.0.0.1", args.port)
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(server.serve(sockets=[sock]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
