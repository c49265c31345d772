"""The ASGI app in front of a custom server.

It is the model server app with other routes: Kingpost keeps ``/metrics`` and
``/v1/models/model/loaded``; predict goes to ``predict_endpoint``, liveness and
readiness to theirs, and every other path (``.../sync/{route}`` included) is
forwarded unchanged. Request ids, metrics and the access log work as for any
model because every request still goes through ``ModelApp.handle_http``.
"""

from __future__ import annotations

import logging

from kingpost.errors import NotReadyError, UpstreamUnavailableError
from kingpost.model.descriptor import ModelDescriptor
from kingpost.model.loader import ModelSource
from kingpost.proxy.config import CustomServerConfig, parse_custom_server
from kingpost.proxy.environment import ChildSecrets, child_environment
from kingpost.proxy.forwarding import Forwarder
from kingpost.proxy.model import custom_server_class
from kingpost.proxy.supervisor import ServerState, ServerSupervisor
from kingpost.server.app import JSON, ModelApp, ServerSettings
from kingpost.server.exchange import Exchange
from kingpost.server.routing import Route, Router, split_platform_path

logger = logging.getLogger("kingpost.proxy")
# The readiness probe logs every poll at INFO; its outcome is logged here instead.
logging.getLogger("httpx").setLevel(logging.WARNING)

ANY_METHOD = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


class CustomServerApp(ModelApp):
    """Serves a model directory whose config.yaml has ``docker_server:``."""

    def __init__(self, source: ModelSource, settings: ServerSettings | None = None) -> None:
        runtime = source.config.runtime
        self.server: CustomServerConfig = parse_custom_server(source.config.docker_server)
        self.supervisor = ServerSupervisor(self.server, cwd=source.model_dir)
        self.forwarder = Forwarder(
            self.server.server_port,
            runtime.max_request_bytes,
            runtime.request_timeout,
            runtime.streaming_read_timeout,
        )
        self.secrets: ChildSecrets | None = None
        model_cls = custom_server_class(self.supervisor, runtime.max_request_bytes)
        super().__init__(source, ModelDescriptor.from_class(model_cls), settings)

    # -- lifespan: the command lives as long as the app --------------------------

    def startup(self) -> None:
        self.start_server()
        super().startup()

    async def shutdown(self) -> None:
        await super().shutdown()
        await self.stop_server()

    def start_server(self) -> None:
        config = self.source.config
        self.secrets = ChildSecrets(config.secrets, self.source.secrets_dir)
        env = child_environment(config.environment_variables, self.secrets)
        self.supervisor.start(env)

    async def stop_server(self) -> None:
        """After the last request has drained: stop the command, close the pool."""
        await self.supervisor.stop()
        self.forwarder.close()
        if self.secrets is not None:
            self.secrets.remove()

    # -- routes ------------------------------------------------------------------

    def _build_router(self) -> Router:
        router = Router()
        router.add("/", "liveness", ANY_METHOD, self.handle_server_liveness)
        router.add("/v1/models/model", "readiness", ("GET", "HEAD"), self.handle_server_readiness)
        router.add("/v1/models/model/loaded", "loaded", ("GET", "HEAD"), self.handle_loaded)
        router.add("/metrics", "metrics", ("GET",), self.handle_metrics)
        router.add("/predict", "predict", ANY_METHOD, self.handle_server_predict)
        router.add("/v1/models/model:predict", "predict", ANY_METHOD, self.handle_server_predict)
        router.fallback = Route("forward", frozenset(ANY_METHOD), self.handle_forward)
        return router

    def _require_server(self) -> None:
        if self.draining:
            raise NotReadyError("the server is shutting down")
        if not self.lifecycle.loaded:
            raise NotReadyError("the custom server is starting")
        if not self.supervisor.ready:
            raise UpstreamUnavailableError("the custom server is not running; it is restarting")

    async def handle_forward(self, ex: Exchange) -> None:
        await self._forward(ex, upstream_path(ex.scope))

    async def handle_server_predict(self, ex: Exchange) -> None:
        await self._forward(ex, self.server.predict_endpoint)

    async def _forward(self, ex: Exchange, path: str) -> None:
        self._require_server()
        with self.model_work:  # a drain on SIGTERM waits for these
            await self.forwarder.forward(ex, path)

    async def handle_server_liveness(self, ex: Exchange) -> None:
        if ex.scope["method"] not in ("GET", "HEAD"):
            await self.handle_forward(ex)
        elif self.supervisor.ready:
            await self.forwarder.forward(ex, self.server.liveness_endpoint)
        elif self.supervisor.state in (ServerState.STARTING, ServerState.RESTARTING):
            # Kingpost is alive and bringing the command up; readiness says it is not ready.
            await ex.send_bytes(200, b'{"status":"alive"}', JSON)
        else:
            raise NotReadyError(f"the custom server is {self.supervisor.state.value}")

    async def handle_server_readiness(self, ex: Exchange) -> None:
        if self.draining:
            raise NotReadyError("the server is shutting down")
        if not self.lifecycle.loaded or not self.supervisor.ready:
            raise NotReadyError("the custom server is not ready")
        await self.forwarder.forward(ex, self.server.readiness_endpoint)


def upstream_path(scope: dict[str, object]) -> str:
    """The path to forward: as the client wrote it, less any platform prefix."""
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, bytes) else str(scope["path"])
    platform = split_platform_path(path)
    return platform.path if platform is not None else path
