"""A real ``kingpost up`` process for the platform tests, and helpers to wait on it."""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kingpost.platform.client import AdminClient
from kingpost.testing import free_port

HERE = Path(__file__).resolve().parent
MODELS = HERE / "models"
ROOT = HERE.parent.parent
# Replicas start ``kingpost serve`` from this checkout.
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


class PlatformProcess:
    """``kingpost up --home HOME`` on a free 127.0.0.1 port.

    With ``api_key`` (an admin key the platform accepts), the admin client, the
    readiness poll and ``cli`` send it; ``verify`` (an SSL context) means HTTPS.
    """

    def __init__(
        self,
        home: Path,
        *args: str,
        env: dict[str, str] | None = None,
        api_key: str | None = None,
        verify: ssl.SSLContext | None = None,
    ) -> None:
        self.home = home
        self.args = list(args)
        self.env = {**ENV, **(env or {})}
        self.env.pop("KINGPOST_API_KEY", None)
        if api_key is not None:
            self.env["KINGPOST_API_KEY"] = api_key
        self.api_key = api_key
        self.verify = verify
        self.port = free_port()
        scheme = "https" if verify is not None else "http"
        self.base_url = f"{scheme}://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the object
            prefix="kingpost-up-", suffix=".log", delete=False
        )
        self.admin = AdminClient(self.base_url, api_key=api_key, verify=verify or True)

    def url(self, path: str) -> str:
        return self.base_url + path

    def start(self, timeout: float = 30.0) -> PlatformProcess:
        command = [sys.executable, "-m", "kingpost", "up", "--home", str(self.home)]
        self.process = subprocess.Popen(
            [*command, "--port", str(self.port), *self.args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        headers = {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        verify: ssl.SSLContext | bool = self.verify or True
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"kingpost up exited:\n{self.logs()}")
            try:
                status = httpx.get(
                    self.url("/admin/v1/status"), timeout=1, headers=headers, verify=verify
                ).status_code
                if status == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"kingpost up did not answer:\n{self.logs()}")
            time.sleep(0.05)

    def kill9(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)

    def logs(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def close(self) -> None:
        # The client's idle connection first: over TLS the server's close of it waits
        # for the client's close_notify, which an idle client never sends.
        self.admin.close()
        self.stop()
        self._log.close()
        os.unlink(self._log.name)

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run a ``kingpost`` command against this platform."""
        return subprocess.run(
            [sys.executable, "-m", "kingpost", *args, "--platform", self.base_url],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
        )


POSTGRES_SERVER = os.environ.get("KINGPOST_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")


def postgres_database(name: str) -> str:
    """The URL of database ``name`` on the test PostgreSQL server, made if missing; the
    test is skipped where no server answers."""
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(f"{POSTGRES_SERVER}/postgres", autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL at {POSTGRES_SERVER} (.ci/run starts one): {exc}")
    with admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if exists.fetchone() is None:
            admin.execute(f"CREATE DATABASE {name}")
    return f"{POSTGRES_SERVER}/{name}"


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def model_copy(root: Path, name: str, source: Path = MODELS / "versioned", **files: str) -> Path:
    """A copy of a test model under ``root/name`` with some files rewritten."""
    target = root / name
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    for relative, text in files.items():
        (target / relative.replace("__", "/")).write_text(text)
    return target


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture(scope="module")
def module_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("platform")


@pytest.fixture(scope="module")
def markers(module_dir: Path) -> Path:
    path = module_dir / "markers"
    path.mkdir()
    return path


@pytest.fixture(scope="module")
def platform(module_dir: Path, markers: Path) -> Iterator[PlatformProcess]:
    """One platform shared by a module's tests (each test uses its own models)."""
    process = PlatformProcess(
        module_dir / "home", "--park-timeout", "20", env={"MARKER_DIR": str(markers)}
    )
    process.start()
    try:
        yield process
    finally:
        process.close()
