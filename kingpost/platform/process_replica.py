"""The local replica: a supervised ``kingpost serve`` process on a 127.0.0.1 port.

It runs as ``python -m kingpost serve DIR --port P --environment ENV`` in its
own process group (``proxy.process.ChildProcess``: the group dies with the
platform, even on SIGKILL), its output appended to the deployment's log file.
It is ready when ``/v1/models/model`` answers 200. A replica that exits after
being ready is started again with exponential back-off on a fresh port; the
requests it had in flight get 502, new ones go to the other replicas. One that
never gets ready is FAILED, with its last output lines as the error.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.websockets import WebSocket

from kingpost.platform.relay import Limits, relay_http
from kingpost.platform.replica import (
    Receive,
    Replica,
    ReplicaSpec,
    ReplicaState,
    ReplicaStatus,
    ReplicaUnreachableError,
    Scope,
    Send,
)
from kingpost.ports import free_port
from kingpost.proxy.process import ChildProcess
from kingpost.proxy.upstream import UpstreamError, UpstreamPool
from kingpost.proxy.websocket import relay_websocket

logger = logging.getLogger("kingpost.platform")

_POLL = 0.05
_MAX_POLL = 0.5
_STABLE_AFTER = 30.0  # ready this long: the next crash starts the back-off afresh
_names = itertools.count(1)


@dataclass(frozen=True)
class ProcessOptions:
    limits: Limits = field(default_factory=Limits)
    start_timeout: float = 600.0
    restart_delay: float = 0.5
    max_restart_delay: float = 10.0
    python: str = sys.executable
    log_level: str = "info"
    extra_args: list[str] = field(default_factory=list)
    max_websocket_message: int = 16 << 20


class ProcessReplicaFactory:
    def __init__(self, options: ProcessOptions) -> None:
        self.options = options

    def __call__(self, spec: ReplicaSpec, on_change: Callable[[Replica], None]) -> Replica:
        return ProcessReplica(spec, self.options, on_change)


class ProcessReplica(ReplicaStatus):
    """A ``kingpost serve`` child process kept running (see the module docstring)."""

    def __init__(
        self, spec: ReplicaSpec, options: ProcessOptions, on_change: Callable[[Replica], None]
    ) -> None:
        super().__init__(spec, on_change)
        self.options = options
        self.name = f"{spec.deployment_id}/{next(_names)}"
        self.restarts = 0
        self.port = 0
        self.pid: int | None = None
        self._upstream: UpstreamPool | None = None
        self._child: ChildProcess | None = None
        self._task: asyncio.Task[None] | None = None

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "state": self._state.value,
            "address": f"127.0.0.1:{self.port}" if self.port else None,
            "pid": self.pid,
            "in_flight": self.in_flight,
            "restarts": self.restarts,
        }

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._supervise())

    # -- requests ----------------------------------------------------------------

    async def forward(self, scope: Scope, receive: Receive, send: Send, path: str) -> int:
        upstream = self._upstream
        if upstream is None or self._state is not ReplicaState.READY:
            raise ReplicaUnreachableError(f"replica {self.name} is {self._state.value}")
        try:
            return await relay_http(upstream, scope, receive, send, path, self.options.limits)
        except ReplicaUnreachableError:
            self._suspect()
            raise

    async def websocket(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        ws = WebSocket(scope, receive, send)  # type: ignore[arg-type]
        subprotocols = scope.get("subprotocols") or []
        await ws.accept(subprotocols[0] if subprotocols else None)
        url = f"ws://127.0.0.1:{self.port}{path}"
        request_id = _header(scope, b"x-request-id") or ""
        await relay_websocket(ws, url, request_id, self.options.max_websocket_message)

    def _suspect(self) -> None:
        """A refused connection: stop taking requests until the process is seen again."""
        child = self._child
        if self._state is ReplicaState.READY and child is not None and child.exited.done():
            self._set_state(ReplicaState.RESTARTING)

    # -- the process -------------------------------------------------------------

    def _command(self, port: int) -> str:
        spec = self.spec
        args = [
            self.options.python,
            "-m",
            "kingpost",
            "serve",
            str(spec.model_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            self.options.log_level,
            *self.options.extra_args,
        ]
        if spec.environment is not None:
            args += ["--environment", spec.environment]
        if spec.watch:
            args.append("--watch")
        log = shlex.quote(str(spec.log_path))
        return f"exec {shlex.join(args)} >>{log} 2>&1"

    async def _supervise(self) -> None:
        failures = 0
        port_clashes = 0
        first = True
        while True:
            port = free_port()  # below the ephemeral range: no outgoing connection takes it
            child = await ChildProcess.start(self._command(port), _child_env(), self.spec.model_dir)
            self._child, self.pid = child, child.pid
            upstream = UpstreamPool("127.0.0.1", port)
            error = await self._wait_ready(child, upstream)
            if error is not None:
                upstream.close()
                await child.reap()
                if first and "already in use" in error and port_clashes < 5:
                    port_clashes += 1  # another process took the free port first: pick again
                    continue
                if first:
                    self._error = error
                    logger.error("replica %s failed to start: %s", self.name, error)
                    self._set_state(ReplicaState.FAILED)
                    return
                failures += 1
                await self._back_off(failures)
                continue
            first = False
            self.port, self._upstream = port, upstream
            ready_at = time.monotonic()
            logger.info("replica %s (pid %d) ready on port %d", self.name, child.pid, port)
            self._set_state(ReplicaState.READY)
            code = await asyncio.shield(child.exited)
            logger.error("replica %s (pid %d) exited with code %d", self.name, child.pid, code)
            self._upstream = None
            self._set_state(ReplicaState.RESTARTING)
            upstream.close()
            await child.reap()
            stable = time.monotonic() - ready_at >= _STABLE_AFTER
            failures = 1 if stable else failures + 1
            await self._back_off(failures)

    async def _back_off(self, failures: int) -> None:
        options = self.options
        delay = min(options.restart_delay * 2 ** (failures - 1), options.max_restart_delay)
        self.restarts += 1
        logger.info("restarting replica %s in %.1f s", self.name, delay)
        await asyncio.sleep(delay)

    async def _wait_ready(self, child: ChildProcess, upstream: UpstreamPool) -> str | None:
        """None once ``/v1/models/model`` answers 200; else why it never will."""
        deadline = time.monotonic() + self.options.start_timeout
        interval = _POLL
        while True:
            if child.exited.done():
                return (
                    f"the replica exited with code {child.returncode} before it was ready; "
                    f"its last output:\n{self._log_tail()}"
                )
            if time.monotonic() >= deadline:
                return (
                    f"not ready within {self.options.start_timeout:g} s; "
                    f"its last output:\n{self._log_tail()}"
                )
            try:
                response = await upstream.request(b"GET", b"/v1/models/model", [], None)
                while not (await response.take())[1]:
                    pass
                response.release()
                if response.status == 200:
                    return None
            except UpstreamError:
                pass
            await asyncio.wait([child.exited], timeout=interval)
            interval = min(interval * 1.5, _MAX_POLL)

    def _log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.spec.log_path, "rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - 16384))
                text = log.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def stop(self, grace: float) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        upstream, self._upstream = self._upstream, None
        child = self._child
        if child is not None:
            if child.returncode is None:
                await child.stop(grace)
            else:
                await child.reap()
        if upstream is not None:
            upstream.close()
        if self._state is not ReplicaState.FAILED:
            self._set_state(ReplicaState.STOPPED)


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None
