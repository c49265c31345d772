"""Writing custom-server model directories and starting Kingpost in front of them."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Any

import yaml

from kingpost.testing import ServerProcess, free_port

SERVERS = Path(__file__).resolve().parent / "servers"
FASTAPI_SERVER = SERVERS / "fastapi_server.py"
ROOT = Path(__file__).resolve().parents[2]


def python_command(script: Path, *args: str) -> str:
    return shlex.join([sys.executable, str(script), *args])


def write_custom_server(
    directory: Path,
    start_command: str,
    server_port: int,
    readiness_endpoint: str = "/health",
    liveness_endpoint: str = "/alive",
    predict_endpoint: str = "/predict",
    **config: Any,
) -> Path:
    """Write a model directory whose config.yaml runs ``start_command`` as a custom server."""
    docker_server = {
        "start_command": start_command,
        "server_port": server_port,
        "predict_endpoint": predict_endpoint,
        "readiness_endpoint": readiness_endpoint,
        "liveness_endpoint": liveness_endpoint,
        **config.pop("docker_server", {}),
    }
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.yaml").write_text(
        yaml.safe_dump({"model_name": "custom", "docker_server": docker_server, **config})
    )
    return directory


def server_env() -> dict[str, str]:
    """Kingpost and the child import this checkout of kingpost."""
    path = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": f"{ROOT}{os.pathsep}{path}" if path else str(ROOT)}


class FastAPIServer:
    """A started Kingpost in front of tests/proxy/servers/fastapi_server.py."""

    def __init__(self, kingpost: ServerProcess, child_port: int) -> None:
        self.kingpost = kingpost
        self.child_port = child_port

    def url(self, path: str) -> str:
        return self.kingpost.url(path)

    def child_url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.child_port}{path}"


class FastAPIServers:
    """Starts Kingpost with the test FastAPI app as its custom server; stops them all."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[ServerProcess] = []

    def start(
        self,
        *server_args: str,
        wait_ready: bool = True,
        kingpost_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        **config: Any,
    ) -> FastAPIServer:
        port = free_port()
        command = python_command(FASTAPI_SERVER, "--port", str(port), *server_args)
        directory = self.directory / f"server-{len(self.started)}"
        model_dir = write_custom_server(directory, command, port, **config)
        kingpost = ServerProcess(
            model_dir, *kingpost_args, env={**server_env(), **(env or {})}, wait_ready=False
        )
        self.started.append(kingpost)
        kingpost.start()
        if wait_ready:
            kingpost.wait_until("/v1/models/model", 60)
        return FastAPIServer(kingpost, port)

    def stop_all(self) -> None:
        for kingpost in self.started:
            kingpost.stop()
