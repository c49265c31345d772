"""Starting and stopping the servers under test, all on 127.0.0.1.

Every process here is one the suite started itself; it is stopped by its own
process id (its process group only as a last resort, for workers it forked).
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from kingpost.testing import free_port

ROOT = Path(__file__).resolve().parent.parent
MODELS = Path(__file__).resolve().parent / "models"
HOST = "127.0.0.1"


@dataclass
class ServerSpec:
    """How to start one server: ``{port}`` in ``argv`` is replaced by its port."""

    name: str
    argv: list[str]
    ready_path: str = "/"
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = ROOT  # ``python -m`` imports from here first


def kingpost(model: str, workers: int, *extra: str, source: Path | None = None) -> ServerSpec:
    """``kingpost serve`` of a bench model; ``source``: run the package found there instead."""
    argv = [sys.executable, "-m", "kingpost", "serve", str(MODELS / model), "--port", "{port}"]
    argv += ["--log-level", "warning", *extra]
    if workers > 1:
        argv += ["--workers", str(workers)]
    if source is None:
        return ServerSpec(f"kingpost {model}", argv, ready_path="/v1/models/model")
    env = {"PYTHONPATH": str(source)}
    name = f"kingpost {model} from {source}"
    return ServerSpec(name, argv, ready_path="/v1/models/model", env=env, cwd=source)


def check_out(revision: str) -> Path:
    """The tree of ``revision`` in a new temporary directory (``git archive``: the
    repository itself is not touched). The caller removes it."""
    target = Path(tempfile.mkdtemp(prefix="kingpost-bench-"))
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", revision],
        check=True,
        capture_output=True,
        timeout=60,
    )
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True, timeout=60)
    return target


def uvicorn(app: str, workers: int) -> ServerSpec:
    argv = [sys.executable, "-m", "uvicorn", app, "--host", HOST, "--port", "{port}"]
    argv += ["--loop", "uvloop", "--http", "httptools", "--no-access-log"]
    argv += ["--log-level", "warning", "--workers", str(workers)]
    return ServerSpec(f"uvicorn {app}", argv)


def granian(app: str, workers: int) -> ServerSpec:
    argv = [sys.executable, "-m", "granian", "--interface", "asgi", "--host", HOST]
    argv += ["--port", "{port}", "--workers", str(workers), "--loop", "uvloop"]
    argv += ["--no-ws", "--log-level", "warning", app]
    return ServerSpec(f"granian {app}", argv)


class Server:
    """One running server process."""

    def __init__(self, spec: ServerSpec) -> None:
        self.spec = spec
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        # Kept for the life of the server object, so its output can be shown on failure.
        self._log = tempfile.TemporaryFile()  # noqa: SIM115
        self.started_at = 0.0
        self.ready_after = float("nan")

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}"

    def start(self, timeout: float = 60.0) -> Server:
        argv = [arg.replace("{port}", str(self.port)) for arg in self.spec.argv]
        env = {**os.environ, "PYTHONPATH": _pythonpath(), **self.spec.env}
        self.started_at = time.perf_counter()
        self.process = subprocess.Popen(
            argv,
            cwd=self.spec.cwd,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_ready(timeout)
        self.ready_after = time.perf_counter() - self.started_at
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = self.started_at + timeout
        while time.perf_counter() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.spec.name} exited early:\n{self.logs()}")
            if _answers_200(self.port, self.spec.ready_path):
                return
            time.sleep(0.005)
        raise RuntimeError(f"{self.spec.name} not ready after {timeout} s:\n{self.logs()}")

    def worker_pids(self) -> list[int]:
        """The processes serving requests: the children if it forked workers, else itself."""
        assert self.process is not None
        children = _children(self.process.pid)
        return children or [self.process.pid]

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by the server and its worker processes."""
        assert self.process is not None
        pids = {self.process.pid, *_children(self.process.pid)}
        return sum(_cpu_ticks(pid) for pid in pids) / _TICKS_PER_SECOND

    def rss_mb(self) -> float:
        """Resident memory of the largest serving process, in MB."""
        return max(_rss_kb(pid) for pid in self.worker_pids()) / 1024

    def logs(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-4000:]

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the group is this process and its workers
            process.wait(5)


def _pythonpath() -> str:
    existing = os.environ.get("PYTHONPATH")
    return f"{ROOT}{os.pathsep}{existing}" if existing else str(ROOT)


def _answers_200(port: int, path: str) -> bool:
    connection = http.client.HTTPConnection(HOST, port, timeout=1)
    try:
        connection.request("GET", path)
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def _cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime, stime


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0
