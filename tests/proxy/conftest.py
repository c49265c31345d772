from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.proxy.custom_servers import FastAPIServer, FastAPIServers


@pytest.fixture
def start_fastapi_server(tmp_path: Path) -> Iterator[Callable[..., FastAPIServer]]:
    """Start Kingpost in front of the test FastAPI app (stopped after the test)."""
    servers = FastAPIServers(tmp_path)
    yield servers.start
    servers.stop_all()


@pytest.fixture(scope="module")
def shared_fastapi_servers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[FastAPIServers]:
    """Like ``start_fastapi_server`` but kept for a whole test module."""
    servers = FastAPIServers(tmp_path_factory.mktemp("custom-servers"))
    yield servers
    servers.stop_all()
