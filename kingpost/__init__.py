"""Kingpost: serve a model directory as a production HTTP service.

The public names live here; the modules behind them are the package's own.

    import kingpost

    with kingpost.ServerProcess("examples/echo") as server:   # a real server, for tests
        httpx.post(server.url("/predict"), json={"text": "hi"})
    with kingpost.InProcessServer("examples/echo") as server:  # its app, with no socket
        server.client.post("/predict", json={"text": "hi"})

    batcher = kingpost.DynamicBatcher(embed_many, max_batch_size=32)
    raise kingpost.InvalidInputError("text must not be empty")       # a 400 in the route's shape
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kingpost.batching import BatchStats, DynamicBatcher
from kingpost.errors import (
    BatcherClosedError,
    BatchSizeMismatchError,
    ClientDisconnectedError,
    ConfigError,
    HookNotFoundError,
    InstallError,
    InvalidInputError,
    InvalidParameterError,
    KingpostError,
    MethodNotAllowedError,
    MissingRequirementsError,
    ModelDefinitionError,
    ModelFilesNotFoundError,
    ModelLoadError,
    NotReadyError,
    PayloadTooLargeError,
    RequestError,
    RequestTimeoutError,
    RouteNotFoundError,
    ScaffoldError,
    SecretNotFoundError,
    StreamReadTimeoutError,
    UpstreamConnectError,
    UpstreamError,
    UpstreamUnavailableError,
)

if TYPE_CHECKING:
    from kingpost.testing import InProcessServer, ServerProcess

__version__ = "0.1.0"

__all__ = [
    "BatchSizeMismatchError",
    "BatchStats",
    "BatcherClosedError",
    "ClientDisconnectedError",
    "ConfigError",
    "DynamicBatcher",
    "HookNotFoundError",
    "InProcessServer",
    "InstallError",
    "InvalidInputError",
    "InvalidParameterError",
    "KingpostError",
    "MethodNotAllowedError",
    "MissingRequirementsError",
    "ModelDefinitionError",
    "ModelFilesNotFoundError",
    "ModelLoadError",
    "NotReadyError",
    "PayloadTooLargeError",
    "RequestError",
    "RequestTimeoutError",
    "RouteNotFoundError",
    "ScaffoldError",
    "SecretNotFoundError",
    "ServerProcess",
    "StreamReadTimeoutError",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamUnavailableError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    # The test servers pull in httpx and subprocess handling: only for those who use them.
    if name in ("ServerProcess", "InProcessServer"):
        from kingpost import testing

        return getattr(testing, name)
    raise AttributeError(f"module 'kingpost' has no attribute {name!r}")
