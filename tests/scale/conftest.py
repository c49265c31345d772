"""Shared pieces of the Ray Serve tests: a ``kingpost serve --ray`` process and its tree.

Each test module starts one server (one local Ray cluster on 127.0.0.1); modules
that need Ray skip with a clear reason when it is not installed.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from kingpost.testing import ServerProcess
from tests.conftest import ROOT

requires_ray = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None,
    reason="Ray Serve is not installed (the ray extra: pip install 'kingpost[ray]')",
)
# A local cluster plus replicas on a busy 2-core machine: generous, the wait polls.
RAY_STARTUP_TIMEOUT = 180.0
REPLICA_HEADER = "x-kingpost-replica"


def ray_server(model_dir: Path, *args: str, env: dict[str, str] | None = None) -> ServerProcess:
    """A ``kingpost serve DIR --ray ...`` process (not started)."""
    return ServerProcess(model_dir, "--ray", *args, env=env, startup_timeout=RAY_STARTUP_TIMEOUT)


class ClusterOwner:
    """A Ray cluster run by another process (tests/scale/cluster_owner.py)."""

    def __init__(self, markers: Path) -> None:
        # Replicas on this cluster inherit its environment, not the joining server's.
        self.markers = markers
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("cluster_owner.py"))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, "MARKER_DIR": str(markers)},
            start_new_session=True,
        )
        assert self.process.stdout is not None
        self.address = self.process.stdout.readline().strip()
        self.client_address = self.process.stdout.readline().strip()  # ray://127.0.0.1:PORT
        if not self.client_address:
            raise RuntimeError(f"the cluster did not start (exit {self.process.wait(30)})")

    def apps(self) -> list[str]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("apps\n")
        self.process.stdin.flush()
        return list(json.loads(self.process.stdout.readline()))

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()  # the owner calls ray.shutdown()
        self.process.wait(60)

    def check_server_leaves(self, server: ServerProcess) -> None:
        """A joined server's clean stop removes its application and leaves the cluster up."""
        assert self.apps() == ["kingpost"]
        assert server.stop(grace=60) == 0
        assert self.apps() == []
        assert self.process.poll() is None


@pytest.fixture(scope="session")
def owner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterOwner]:
    """One cluster Kingpost did not start, for every module that joins one.

    Its replicas see ``MARKER_DIR``: ``owner.markers``.
    """
    owner = ClusterOwner(tmp_path_factory.mktemp("ray-markers"))
    try:
        yield owner
    finally:
        owner.close()


def process_tree(root: int) -> dict[int, str]:
    """pid -> command line of ``root`` and every process below it (read from /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may itself hold spaces or parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        parents[int(entry)] = int(fields[1])
    tree = {root}
    grew = True
    while grew:
        below = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= below
        grew = bool(below)
    commands: dict[int, str] = {}
    for pid in tree:
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        commands[pid] = raw.replace(b"\0", b" ").decode(errors="replace").strip()
    return commands


def replica_pids(server: ServerProcess | ClusterOwner) -> set[int]:
    """The replica processes below the server (a cluster it started) or a cluster owner."""
    assert server.process is not None
    tree = process_tree(server.process.pid)
    return {pid for pid, command in tree.items() if command.startswith("ray::ServeReplica")}


@dataclass(frozen=True)
class Listener:
    pid: int
    command: str
    address: str
    port: int


def listeners(pids: dict[int, str]) -> list[Listener]:
    """TCP sockets in LISTEN state owned by ``pids`` (what ``ss -ltnp`` shows)."""
    by_inode: dict[str, tuple[str, int]] = {}
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            host_hex, port_hex = fields[1].split(":")
            by_inode[fields[9]] = (_address(host_hex, family), int(port_hex, 16))
    found = []
    for pid, command in pids.items():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in by_inode:
                address, port = by_inode[target[8:-1]]
                found.append(Listener(pid, command, address, port))
    return found


def _address(host_hex: str, family: int) -> str:
    raw = bytes.fromhex(host_hex)
    # /proc prints each 32-bit word in host (little-endian) order.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(socket.inet_ntop(family, words))
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


@dataclass(frozen=True)
class Outcome:
    started: float
    ended: float
    status: int  # 0 when the request got no response (connection cut, timeout)
    replica: str | None


class LoadLoop:
    """``workers`` threads posting to ``path`` back to back until stopped (bounded).

    with LoadLoop(server, {"sleep": 0.3}, workers=6) as load:
        ...
    load.outcomes  # every request's Outcome
    """

    def __init__(
        self,
        server: ServerProcess,
        payload: object,
        workers: int,
        path: str = "/predict",
        max_seconds: float = 60.0,
        max_requests: int = 5000,
    ) -> None:
        self.server = server
        self.payload = payload
        self.workers = workers
        self.path = path
        self.max_seconds = max_seconds
        self.max_requests = max_requests
        self.outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def __enter__(self) -> LoadLoop:
        deadline = time.monotonic() + self.max_seconds
        for _ in range(self.workers):
            thread = threading.Thread(target=self._run, args=(deadline,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _run(self, deadline: float) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                with self._lock:
                    if len(self.outcomes) >= self.max_requests:
                        return
                started = time.monotonic()
                try:
                    reply = client.post(self.server.url(self.path), json=self.payload)
                    outcome = Outcome(
                        started,
                        time.monotonic(),
                        reply.status_code,
                        reply.headers.get(REPLICA_HEADER),
                    )
                except httpx.HTTPError:
                    outcome = Outcome(started, time.monotonic(), 0, None)
                with self._lock:
                    self.outcomes.append(outcome)

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    server: ServerProcess | None = None,
) -> None:
    """Poll ``condition`` until it holds; AssertionError naming ``what`` (with the end of
    ``server``'s log, when given) if it has not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    log = f"\nthe server's log ends:\n{server.logs()[-6000:]}" if server is not None else ""
    raise AssertionError(f"{what}: not within {timeout} s{log}")
