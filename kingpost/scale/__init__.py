"""Ray Serve as the replica backend: the same model directory on many machines.

Needs the ``ray`` extra (``pip install 'kingpost[ray]'``). The public surface:

- ``Scaling``, ``deployment_options``: platform settings -> Serve deployment options
  (no Ray import; usable anywhere).
- ``RayCluster``, ``ClusterOptions``: a local cluster pinned to 127.0.0.1, or an
  existing one (``address="auto"``, ``"ray://head:10001"``).
- ``deploy_model`` -> ``ModelApplication``: a model directory as a named Serve
  application with a route prefix and autoscaling; ``.front()`` is an ASGI app
  that sends requests to its replicas, ``.handle`` the raw deployment handle.
- ``serve_on_ray``: what ``kingpost serve DIR --ray`` runs.
"""

from __future__ import annotations

from kingpost.scale.application import ModelApplication, deploy_model
from kingpost.scale.cluster import ClusterOptions, RayCluster
from kingpost.scale.serving import RayServeOptions, serve_on_ray
from kingpost.scale.settings import Scaling, actor_options, deployment_options

__all__ = [
    "ClusterOptions",
    "ModelApplication",
    "RayCluster",
    "RayServeOptions",
    "Scaling",
    "actor_options",
    "deploy_model",
    "deployment_options",
    "serve_on_ray",
]
