"""Several worker processes serving one model on one port.

Each worker is a forked copy of this process that imports, constructs and
loads the model itself and listens on the same port with SO_REUSEPORT, so
the kernel spreads connections across workers. The supervisor (this process)
forwards SIGTERM and SIGINT to the workers as one SIGTERM each (a second
signal: a second SIGTERM, which stops them at once), and if a worker exits on
its own (a failed load, a crash) it stops the others and exits with that code.

Use it for CPU models that are safe to load N times; not for a model that
holds one GPU (every worker would load its own copy onto it).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
from collections.abc import Callable
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType

logger = logging.getLogger("kingpost")

WorkerMain = Callable[[], int]


def serve_workers(count: int, worker_main: WorkerMain, reserved: socket.socket) -> int:
    """Run ``count`` forked workers, each ``worker_main()``, until stopped; the exit code.

    ``reserved`` is the port's socket held by this process (bound, not listening);
    each worker binds its own with SO_REUSEPORT.
    """
    context = multiprocessing.get_context("fork")
    workers: list[BaseProcess] = []
    for index in range(count):
        process = context.Process(
            target=_run_worker,
            args=(worker_main, reserved.fileno()),
            name=f"kingpost-worker-{index}",
        )
        process.start()
        workers.append(process)
    host, port = reserved.getsockname()[:2]
    logger.info(
        "started %d workers on http://%s:%d: %s",
        len(workers),
        host,
        port,
        " ".join(str(w.pid) for w in workers),
    )
    return _supervise(workers)


def _run_worker(worker_main: WorkerMain, reserved_fd: int) -> None:
    os.close(reserved_fd)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # Ctrl-C reaches every process of the group: the supervisor turns it into SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(worker_main())


def _supervise(workers: list[BaseProcess]) -> int:
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        _terminate(workers)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    exit_code = 0
    try:
        running = list(workers)
        while running:
            for sentinel in wait([w.sentinel for w in running]):
                worker = next(w for w in running if w.sentinel == sentinel)
                worker.join()
                running.remove(worker)
                code = worker.exitcode or 0
                if stopping and code == -signal.SIGTERM:
                    code = 0  # our own stop reached a worker before it set up its handlers
                if code != 0 and exit_code == 0:
                    exit_code = code if code > 0 else 1
                if not stopping:
                    logger.error("worker %d %s: stopping the others", worker.pid, _ended(code))
                    stopping = True
                    _terminate(running)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return exit_code


def _ended(code: int) -> str:
    """How a worker ended, naming the signal that killed it (a native crash, say)."""
    if code < 0:
        try:
            return f"died of {signal.Signals(-code).name}"
        except ValueError:
            return f"died of signal {-code}"
    return f"exited with code {code}"


def _terminate(workers: list[BaseProcess]) -> None:
    for worker in workers:
        if worker.pid is not None and worker.exitcode is None:
            os.kill(worker.pid, signal.SIGTERM)
