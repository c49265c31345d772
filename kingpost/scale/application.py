"""One model directory as one Serve application: the API the platform plugs into.

with RayCluster(ClusterOptions()) as cluster:
    cluster.start_serve()
    app = deploy_model(
        ServeOptions(model_dir=Path("examples/echo"), environment="staging"),
        build_app,  # kingpost serve's own app builder
        name="abc123-staging",
        route_prefix="/environments/staging",
        scaling=Scaling(min_replica=0, max_replica=3, scale_down_delay=60),
    )
    front = app.front()     # an ASGI app: hand it a request, it reaches a replica
    app.update(Scaling(min_replica=1, max_replica=5))
    app.delete()
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from kingpost.config import ModelConfig, load_config
from kingpost.scale.settings import Scaling, deployment_options

if TYPE_CHECKING:
    from kingpost.serve import ServeOptions

AppBuilder = Callable[["ServeOptions"], Any]

logger = logging.getLogger("kingpost.scale")

DEPLOYMENT_NAME = "Model"


@dataclass
class ModelApplication:
    """A running Serve application of one model directory."""

    name: str
    config: ModelConfig
    options: ServeOptions
    build_app: AppBuilder
    scaling: Scaling
    route_prefix: str | None
    handle: Any = field(repr=False)  # ray.serve.handle.DeploymentHandle
    ship: bool = False
    log_format: str = "text"

    def front(self) -> Any:
        """An ASGI app that sends each HTTP request to one of this application's replicas."""
        from kingpost.scale.front import RayFrontApp

        return RayFrontApp(self.name, self.config.runtime.max_request_bytes)

    def update(self, scaling: Scaling) -> None:
        """Apply new replica settings (Serve keeps healthy replicas where it can)."""
        self.scaling = scaling
        self.handle = _run(self)

    def delete(self) -> None:
        from ray import serve

        serve.delete(self.name)


def deploy_model(
    options: ServeOptions,
    build_app: AppBuilder,
    name: str = "kingpost",
    route_prefix: str | None = None,
    scaling: Scaling | None = None,
    ship: bool = False,
    log_format: str = "text",
) -> ModelApplication:
    """Run ``options.model_dir`` as the Serve application ``name``; returns once it is running.

    ``build_app(options)`` builds the model's ASGI app inside each replica: pass
    the composition root's own builder (a module-level function, sent by name).
    ``ship=True``: the replicas load the model directory from their working
    directory, the copy Ray uploaded for this driver
    (``ClusterOptions(working_dir=model_dir)``), for a cluster whose nodes do not
    share this file system. Needs a Ray connection (``RayCluster``). A model
    that fails to load raises Serve's ``RayServeException`` naming the error.
    """
    config = load_config(options.model_dir.resolve())
    application = ModelApplication(
        name=name,
        config=config,
        options=options,
        build_app=build_app,
        scaling=scaling or Scaling.fixed(1),
        route_prefix=route_prefix,
        handle=None,
        ship=ship,
        log_format=log_format,
    )
    application.handle = _run(application)
    return application


def _run(application: ModelApplication) -> Any:
    from ray import serve

    from kingpost.scale.replica import KingpostReplica, ReplicaSpec

    options = application.options
    model_dir = options.model_dir.resolve()
    settings = deployment_options(application.config, application.scaling)
    spec = ReplicaSpec(
        options=replace(options, model_dir=model_dir),
        build_app=application.build_app,
        log_format=application.log_format,
        shipped=application.ship,
    )
    deployment = KingpostReplica.options(name=DEPLOYMENT_NAME, **settings)
    return serve.run(
        deployment.bind(spec),
        name=application.name,
        route_prefix=application.route_prefix,
        # Kingpost's own access log (in the replica) already has a line per request.
        logging_config={"enable_access_log": False, "log_level": "WARNING"},
    )
