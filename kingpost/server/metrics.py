"""The metrics of a server: the families are defined in :mod:`kingpost.observe.metrics`.

``ServerMetrics`` is the registry the core records each request in
(``metrics.observe(route, status, seconds)``) and ``/metrics`` renders.
"""

from kingpost.observe.metrics import ServingMetrics as ServerMetrics

__all__ = ["ServerMetrics"]
