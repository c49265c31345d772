"""Custom servers: run any HTTP server as the model and forward every route to it.

A model directory whose config.yaml has a ``docker_server:`` block needs no
model.py. ``kingpost serve`` starts ``start_command``, supervises it
(``supervisor``, ``process``), hands it environment variables and secrets
(``environment``) as a service of the server core (``service``), and gives the
core a route table (``routes``) whose handlers forward requests (``forwarding``,
``websocket``).
"""

from kingpost.proxy.config import CustomServerConfig
from kingpost.proxy.routes import custom_server_routes
from kingpost.proxy.service import CustomServer

__all__ = ["CustomServer", "CustomServerConfig", "custom_server_routes"]
