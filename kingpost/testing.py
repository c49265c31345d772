"""Run a real ``kingpost serve`` process for tests and benchmarks.

with ServerProcess(Path("examples/echo")) as server:
    httpx.post(server.url("/predict"), json={"x": 1})
"""

from __future__ import annotations

import os
import random
import re
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

# The line ``kingpost serve`` logs once its socket is bound (text or JSON format), and
# the supervisor's line when it forked workers. The port is followed by " (" or ":".
_LISTENING = re.compile(r"(?:listening|\d+ workers) on https?://[^\s/\"]+:(\d+)(?=[ (:])")
_QUIET_LEVELS = {"warning", "warn", "error", "critical", "fatal"}


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` now, for a child that must be told its port.

    Prefer letting the child bind port 0 and report its port (ServerProcess does).
    Where the port must be written down first (a custom server's
    ``docker_server.server_port``), this draws it at random from below the kernel's
    ephemeral range: the kernel never hands those ports out by itself (for port 0 or
    an outgoing connection), so only another explicit pick can take it before the
    child binds, unlike a port from binding 0 and closing.
    """
    low = _ephemeral_low()
    pick = random.SystemRandom()  # not the seeded module state parallel workers share
    if low > 12_000:
        for _ in range(200):
            port = pick.randrange(10_000, low)
            if _is_free(host, port):
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # the Linux default, and above what macOS hands out from 49152


def _is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class ServerProcess:
    """A ``kingpost serve DIR`` child process on 127.0.0.1.

    The server binds port 0 (unless ``--port`` is among ``args``) and ``start()``
    reads the port it got from its "listening on" log line, so parallel runs
    never race for a port. ``start()`` returns once the server answers liveness
    (and readiness, unless ``wait_ready=False``); ``stop()`` sends SIGTERM, then
    SIGKILL after a grace period. Its combined output is kept in a file,
    readable with ``logs()``.
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
        # Polled with ``headers`` (an API key) and ``verify`` (a test CA with --ssl-certfile).
        self.headers = headers or {}
        self.verify = verify
        self.scheme = "https" if "--ssl-certfile" in self.args else "http"
        self._fixed_port = _option(self.args, "--port")
        level = _option(self.args, "--log-level")
        if self._fixed_port is None and level is not None and level.lower() in _QUIET_LEVELS:
            raise ValueError(
                f"--log-level {level} hides the line ServerProcess reads the port from: "
                "pass --port too, or keep the level at info"
            )
        self._port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None
        # The log file lives as long as the server object, not a with-block.
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115
            prefix="kingpost-", suffix=".log", delete=False
        )

    @property
    def port(self) -> int:
        """The port the server listens on; known once ``start()`` has seen it bind."""
        if self._port is None:
            raise RuntimeError("the server's port is known once start() has returned")
        return self._port

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def start(self) -> ServerProcess:
        command = self.command or [sys.executable, "-m", "kingpost", "serve"]
        port_args = [] if self._fixed_port is not None else ["--port", "0"]
        deadline = time.monotonic() + self.startup_timeout
        log_start = os.path.getsize(self._log.name)
        self._port = None
        self.process = subprocess.Popen(
            [*command, str(self.model_dir), *port_args, *self.args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        if self._fixed_port is not None:
            self._port = int(self._fixed_port)
        else:
            self._port = self._wait_for_port(log_start, deadline)
        path = "/v1/models/model" if self.wait_ready else "/"
        self.wait_until(path, max(deadline - time.monotonic(), 0.0))
        return self

    def _wait_for_port(self, log_start: int, deadline: float) -> int:
        """The port in the first "listening on" line this start logged."""
        while True:
            match = _LISTENING.search(self._log_since(log_start))
            if match is not None:
                return int(match[1])
            self._raise_if_exited()
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"server logged no 'listening on' line in {self.startup_timeout} s:\n"
                    + self.logs()
                )
            time.sleep(0.02)

    def _log_since(self, offset: int) -> str:
        with open(self._log.name, "rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def _raise_if_exited(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"server exited with code {self.process.returncode}:\n{self.logs()}")

    def wait_until(self, path: str, timeout: float) -> None:
        """Poll ``path`` until it answers 200; RuntimeError with the logs otherwise."""
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0, headers=self.headers, verify=self.verify) as client:
            while True:
                self._raise_if_exited()
                try:
                    if client.get(self.url(path)).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.05)
        raise RuntimeError(f"server not answering 200 on {path} after {timeout} s:\n{self.logs()}")

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """Wait until the output matches the regular expression ``pattern``; the match.

        AssertionError with the logs if it has not appeared within ``timeout`` seconds.
        """
        expression = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while (match := expression.search(self.logs())) is None:
            if time.monotonic() >= deadline:
                raise AssertionError(f"{pattern!r} not logged in {timeout} s:\n{self.logs()}")
            time.sleep(0.02)
        return match

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


def _option(args: list[str], name: str) -> str | None:
    """The value of ``name`` among command-line ``args`` (``--x v`` or ``--x=v``)."""
    value = None
    for index, arg in enumerate(args):
        if arg == name and index + 1 < len(args):
            value = args[index + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value
