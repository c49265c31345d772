"""Custom servers: run any HTTP server as the model and forward every route to it.

A model directory whose config.yaml has a ``docker_server:`` block needs no
model.py. ``kingpost serve`` starts ``start_command``, supervises it
(``supervisor``, ``process``), hands it environment variables and secrets
(``environment``), and forwards requests (``forwarding``, ``websocket``) from
an app that is the model server app with other routes (``app``).
"""

from kingpost.proxy.app import CustomServerApp
from kingpost.proxy.config import CustomServerConfig

__all__ = ["CustomServerApp", "CustomServerConfig"]
