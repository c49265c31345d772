"""A custom server as the service a server core runs: its command lives as long as the app.

Starting it starts the command (with its environment and secrets) and, in a
thread, waits for it to answer readiness: that is its "load", so readiness
answers 503 meanwhile and a command that never gets ready stops Kingpost with
a non-zero exit, as a failing ``load()`` does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kingpost.errors import NotReadyError, UpstreamUnavailableError
from kingpost.model.loader import ModelSource
from kingpost.proxy.config import CustomServerConfig, parse_custom_server
from kingpost.proxy.environment import ChildSecrets, child_environment
from kingpost.proxy.forwarding import Forwarder
from kingpost.proxy.supervisor import ServerSupervisor
from kingpost.server.drain import Drain
from kingpost.server.lifecycle import ModelLifecycle
from kingpost.server.metrics import ServerMetrics
from kingpost.server.threads import HookThreads


class CustomServer:
    """One supervised command and the pool that forwards to it (a ``Service``)."""

    def __init__(
        self,
        source: ModelSource,
        metrics: ServerMetrics,
        drain: Drain,
        on_fatal: Callable[[int], None] | None = None,
    ) -> None:
        runtime = source.config.runtime
        self.source = source
        self.drain = drain
        self.config: CustomServerConfig = parse_custom_server(source.config.docker_server)
        self.supervisor = ServerSupervisor(self.config, cwd=source.model_dir)
        self.forwarder = Forwarder(
            self.config.server_port,
            runtime.max_request_bytes,
            runtime.request_timeout,
            runtime.streaming_read_timeout,
        )
        self.max_message_bytes = runtime.max_request_bytes
        self.websocket_url = (
            f"ws://127.0.0.1:{self.config.server_port}{self.config.predict_endpoint}"
        )
        self.secrets: ChildSecrets | None = None
        self.threads = HookThreads(4, name="kingpost-proxy")
        self.lifecycle = ModelLifecycle(
            self._wait_first_ready, self.threads, metrics, on_fatal, health=self._healthy
        )
        metrics.watch(lambda: drain.in_flight, lambda: None)

    def _wait_first_ready(self) -> Any:
        self.supervisor.wait_first_ready()
        return self.supervisor

    async def _healthy(self, _: Any) -> bool:
        return self.supervisor.ready

    def check_serving(self) -> None:
        """Raise unless requests can go to the command now."""
        self.drain.check()
        if not self.lifecycle.loaded:
            raise NotReadyError("the custom server is starting")
        if not self.supervisor.ready:
            raise UpstreamUnavailableError("the custom server is not running; it is restarting")

    # -- the Service protocol ----------------------------------------------------

    def start(self) -> None:
        config = self.source.config
        self.secrets = ChildSecrets(config.secrets, self.source.secrets_dir)
        env = child_environment(config.environment_variables, self.secrets)
        self.supervisor.start(env)
        self.lifecycle.start()

    async def wait_started(self) -> BaseException | None:
        return await self.lifecycle.wait_loaded()

    async def stop(self) -> None:
        """After the last request has drained: stop the command, close the pool."""
        await self.lifecycle.stop()
        self.threads.shutdown(wait=False, cancel_futures=True)
        await self.supervisor.stop()
        self.forwarder.close()
        if self.secrets is not None:
            self.secrets.remove()
