from __future__ import annotations

import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from kingpost.testing import ServerProcess

HERE = Path(__file__).resolve().parent
MODEL = HERE / "models" / "worker"
SECRETS = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "an-older-secret"]
POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    payload: Any = None

    def __post_init__(self) -> None:
        self.payload = json.loads(self.body)


@dataclass
class WebhookReceiver:
    """A real HTTP server on 127.0.0.1 that records every POST.

    ``/ok`` answers 204, ``/slow`` 204 after a second, ``/fail`` 500, ``/reject`` 403,
    ``/flaky`` 503 on the
    first POST of each request id and 200 after.
    """

    server: ThreadingHTTPServer
    deliveries: list[Delivery] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def received(self, request_id: str | None = None) -> list[Delivery]:
        with self.lock:
            found = list(self.deliveries)
        if request_id is None:
            return found
        return [d for d in found if d.payload.get("request_id") == request_id]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise AssertionError(f"webhook condition not met in {timeout} s")


def _receiver_handler(receiver_ref: list[WebhookReceiver]) -> type[BaseHTTPRequestHandler]:
    flaky_seen: set[str] = set()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            receiver = receiver_ref[0]
            delivery = Delivery(
                self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.time()
            )
            with receiver.lock:
                receiver.deliveries.append(delivery)
            status = 204
            if self.path == "/fail":
                status = 500
            elif self.path == "/reject":
                status = 403
            elif self.path == "/slow":
                time.sleep(1.0)
            elif self.path == "/flaky":
                key = delivery.payload.get("request_id", "")
                with receiver.lock:
                    first = key not in flaky_seen
                    flaky_seen.add(key)
                status = 503 if first else 200
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    ref: list[WebhookReceiver] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _receiver_handler(ref))
    server.daemon_threads = True
    ref.append(WebhookReceiver(server))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield ref[0]
    server.shutdown()
    server.server_close()
    thread.join(5)


def write_model(target: Path, runtime: dict[str, Any] | None = None, **async_queue: Any) -> Path:
    """A copy of the test model whose config.yaml has the given async_queue settings."""
    shutil.copytree(MODEL, target)
    config = yaml.safe_load((MODEL / "config.yaml").read_text())
    config["runtime"].update(runtime or {})
    config["async_queue"] = {"webhook_secrets": SECRETS, **async_queue}
    (target / "config.yaml").write_text(yaml.safe_dump(config))
    return target


@pytest.fixture(scope="module")
def async_server() -> Iterator[Callable[..., ServerProcess]]:
    """Start ``kingpost serve`` (async inference included) on a model dir."""
    started: list[ServerProcess] = []

    def start(model_dir: Path, env: dict[str, str] | None = None, **kwargs: Any) -> ServerProcess:
        server = ServerProcess(model_dir, env=env, **kwargs)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database on the PostgreSQL server at 127.0.0.1:5432, dropped afterwards."""
    psycopg = pytest.importorskip("psycopg")
    name = f"kingpost_async_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no PostgreSQL at 127.0.0.1:5432: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
