"""Keeping a custom server running: start, wait for readiness, restart after a crash, stop.

The first start is special: if the command exits or does not become ready within
``startup_timeout``, the deployment is broken and Kingpost exits non-zero with the
command's last lines. Once it has been ready, a crash is answered by restarting
it with exponential back-off while requests get 502 and readiness 503.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import logging
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from kingpost.errors import ModelLoadError
from kingpost.proxy.config import CustomServerConfig
from kingpost.proxy.process import ChildProcess

logger = logging.getLogger("kingpost.proxy")

# A crash after this long ready starts the back-off from the first delay again.
STABLE_AFTER = 30.0
_POLL_INTERVAL = 0.1
_MAX_POLL_INTERVAL = 1.0
_PROBE_TIMEOUT = 5.0


class ServerState(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    RESTARTING = "restarting"
    FAILED = "failed"
    STOPPED = "stopped"


class CustomServerExited(Exception):
    """The command exited (or never got ready) before serving."""


class ServerSupervisor:
    """Runs one custom server command for the life of the Kingpost process.

    supervisor = ServerSupervisor(config, cwd=model_dir)
    supervisor.start(env)            # on the event loop
    supervisor.wait_first_ready()    # from a loading thread; raises ModelLoadError
    await supervisor.stop()
    """

    def __init__(self, config: CustomServerConfig, cwd: Path) -> None:
        self.config = config
        self.cwd = cwd
        self.env: dict[str, str] = {}
        self.state = ServerState.STARTING
        self.child: ChildProcess | None = None
        self.restarts = 0
        # Resolved once: None when first ready, an exception if the first start failed.
        self.first_ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._task: asyncio.Task[None] | None = None
        self._probe: httpx.AsyncClient | None = None

    @property
    def ready(self) -> bool:
        return self.state is ServerState.READY

    def start(self, env: Mapping[str, str]) -> None:
        """Start the command with ``env`` and keep it running (call on the serving loop)."""
        self.env = dict(env)
        self._probe = httpx.AsyncClient(timeout=_PROBE_TIMEOUT, trust_env=False)
        self._task = asyncio.get_running_loop().create_task(self._supervise())

    def wait_first_ready(self, timeout: float | None = None) -> None:
        """Block until the command first answers its readiness endpoint.

        Raises ModelLoadError, with the command's last output lines, if it
        exits or times out first.
        """
        try:
            self.first_ready.result(timeout)
        except CustomServerExited as exc:
            raise ModelLoadError(str(exc)) from None

    async def stop(self) -> None:
        """Stop restarting, then SIGTERM the command (SIGKILL after the grace period)."""
        self.state = ServerState.STOPPED
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if not self.first_ready.done():
            self.first_ready.set_exception(CustomServerExited("stopped before it was ready"))
        child = self.child
        if child is not None and child.returncode is None:
            logger.info("stopping the custom server (pid %d)", child.pid)
            code = await child.stop(self.config.stop_grace_period)
            logger.info("the custom server exited with code %d", code)
        elif child is not None:
            await child.reap()
        if self._probe is not None:
            await self._probe.aclose()

    # -- the supervising task ----------------------------------------------------

    async def _supervise(self) -> None:
        try:
            await self._keep_running()
        except Exception as exc:  # a fault here must not leave a loading thread waiting
            logger.exception("supervising the custom server failed")
            self.state = ServerState.FAILED
            if not self.first_ready.done():
                self.first_ready.set_exception(CustomServerExited(f"supervision failed: {exc}"))

    async def _keep_running(self) -> None:
        failures = 0
        while True:
            child = None
            try:
                await self._check_port_free()
                child = self.child = await ChildProcess.start(
                    self.config.start_command, self.env, self.cwd
                )
                await self._wait_ready(child)
            except CustomServerExited as exc:
                if child is not None:
                    await child.reap()
                if not self.first_ready.done():
                    self.state = ServerState.FAILED
                    self.first_ready.set_exception(exc)
                    return
                failures += 1
                logger.error("%s", exc)
                await self._back_off(failures)
                continue
            self.state = ServerState.READY
            ready_at = time.monotonic()
            if not self.first_ready.done():
                self.first_ready.set_result(None)
            logger.info("the custom server (pid %d) is ready", child.pid)

            code = await asyncio.shield(child.exited)  # stop() cancels us, not the wait
            self.state = ServerState.RESTARTING
            await child.reap()
            failures = 1 if time.monotonic() - ready_at >= STABLE_AFTER else failures + 1
            logger.error(
                "the custom server (pid %d) exited with code %d while serving", child.pid, code
            )
            await self._back_off(failures)

    async def _back_off(self, failures: int) -> None:
        config = self.config
        delay = min(config.restart_delay * 2 ** (failures - 1), config.max_restart_delay)
        self.restarts += 1
        logger.info("restarting the custom server in %.1f s (restart %d)", delay, self.restarts)
        await asyncio.sleep(delay)

    async def _check_port_free(self) -> None:
        """Refuse to start when something else answers on the port: it would pass for ours."""
        port = self.config.server_port
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return
        writer.close()
        raise CustomServerExited(
            f"127.0.0.1:{port} (docker_server.server_port) is already in use by another process"
        )

    async def _wait_ready(self, child: ChildProcess) -> None:
        """Poll the readiness endpoint until it answers 2xx, watching for the exit."""
        assert self._probe is not None
        config = self.config
        url = config.base_url + config.readiness_endpoint
        deadline = time.monotonic() + config.startup_timeout
        interval = _POLL_INTERVAL
        while True:
            if child.exited.done():
                raise CustomServerExited(
                    f"the custom server exited with code {child.returncode} before it was "
                    f"ready; its last output:\n{child.last_lines()}"
                )
            if time.monotonic() >= deadline:
                raise CustomServerExited(
                    f"the custom server was not ready on {config.readiness_endpoint} within "
                    f"{config.startup_timeout:g} s (docker_server.startup_timeout); "
                    f"its last output:\n{child.last_lines()}"
                )
            try:
                response = await self._probe.get(url)
                if response.is_success:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.wait([child.exited], timeout=interval)
            interval = min(interval * 1.5, _MAX_POLL_INTERVAL)
