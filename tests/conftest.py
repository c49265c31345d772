from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kingpost.testing import InProcessServer, ServerProcess

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
MODELS = Path(__file__).resolve().parent / "models"


@pytest.fixture
def start_server() -> Iterator[Callable[..., ServerProcess]]:
    """Start ``kingpost serve`` on a model dir (a path, or a name under tests/models)."""
    started: list[ServerProcess] = []

    def start(model: str | Path, *args: str, **kwargs: object) -> ServerProcess:
        model_dir = Path(model) if isinstance(model, Path) else MODELS / model
        server = ServerProcess(model_dir, *args, **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def start_in_process() -> Iterator[Callable[..., InProcessServer]]:
    """Run the app ``kingpost serve`` builds for a model dir in this process (no socket)."""
    started: list[InProcessServer] = []

    def start(model: str | Path, *args: str, **kwargs: object) -> InProcessServer:
        model_dir = Path(model) if isinstance(model, Path) else MODELS / model
        server = InProcessServer(model_dir, *args, **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server.start()

    yield start
    for server in reversed(started):
        server.stop()


@pytest.fixture
def readme_screenshot(tmp_path: Path) -> Callable[[str], Path]:
    """Where a test writes a screenshot: ``docs/NAME`` (shown in the README) only when
    ``KINGPOST_UPDATE_SCREENSHOTS=1``, else a temporary file, so test runs leave the
    checkout as it was."""
    import os

    def target(name: str) -> Path:
        if os.environ.get("KINGPOST_UPDATE_SCREENSHOTS") == "1":
            return ROOT / "docs" / name
        return tmp_path / name

    return target
