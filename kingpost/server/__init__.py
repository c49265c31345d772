"""The server core and the routes of a model.

``app.ServerApp`` is given a ``routing.Router`` of ``Route`` / ``WebSocketRoute`` /
``Mount`` entries, an optional ``app.Service`` it starts and stops with its
lifespan, and a ``drain.Drain``. Each ``Route`` names its ``errors.ErrorDialect``;
a handler raises exceptions from ``kingpost.errors`` and ``errors.ErrorTable``
renders them in that dialect. ``model_service.ModelService`` and
``model_routes.model_routes`` are the service and table of a Model class; modes
(``kingpost.proxy``, ``kingpost.reload``) build their own from the same parts.
"""
