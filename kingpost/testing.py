"""Run a real ``kingpost serve`` process for tests and benchmarks.

with ServerProcess(Path("examples/echo")) as server:
    httpx.post(server.url("/predict"), json={"x": 1})
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """A ``kingpost serve DIR`` child process on a free 127.0.0.1 port.

    ``start()`` returns once the server answers liveness (and readiness, unless
    ``wait_ready=False``); ``stop()`` sends SIGTERM, then SIGKILL after a grace
    period. Its combined output is kept in a file, readable with ``logs()``.
    """

    def __init__(
        self,
        model_dir: Path | str,
        *args: str,
        env: dict[str, str] | None = None,
        wait_ready: bool = True,
        startup_timeout: float = 60.0,
        command: list[str] | None = None,
        headers: dict[str, str] | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.args = list(args)
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.wait_ready = wait_ready
        self.startup_timeout = startup_timeout
        self.command = command
        self.port = free_port()
        # Polled with ``headers`` (an API key) and ``verify`` (a test CA with --ssl-certfile).
        self.headers = headers or {}
        self.verify = verify
        scheme = "https" if "--ssl-certfile" in self.args else "http"
        self.base_url = f"{scheme}://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        # The log file lives as long as the server object, not a with-block.
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115
            prefix="kingpost-", suffix=".log", delete=False
        )

    def url(self, path: str) -> str:
        return self.base_url + path

    def start(self) -> ServerProcess:
        command = self.command or [sys.executable, "-m", "kingpost", "serve"]
        self.process = subprocess.Popen(
            [*command, str(self.model_dir), "--port", str(self.port), *self.args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        self.wait_until("/v1/models/model" if self.wait_ready else "/", self.startup_timeout)
        return self

    def wait_until(self, path: str, timeout: float) -> None:
        """Poll ``path`` until it answers 200; RuntimeError with the logs otherwise."""
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0, headers=self.headers, verify=self.verify) as client:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(
                        f"server exited with code {self.process.returncode}:\n{self.logs()}"
                    )
                try:
                    if client.get(self.url(path)).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        raise RuntimeError(f"server not answering 200 on {path} after {timeout} s:\n{self.logs()}")

    def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self, grace: float = 15.0) -> int | None:
        process = self.process
        if process is None or process.poll() is not None:
            return None if process is None else process.returncode
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            return process.wait(5)

    def logs(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        self._log.close()
        os.unlink(self._log.name)
