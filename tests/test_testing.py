"""kingpost.testing: ServerProcess learns its port from the server; free_port."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from kingpost.testing import ServerProcess, free_port
from tests.conftest import MODELS


def serves(server: ServerProcess) -> bool:
    return httpx.post(server.url("/predict"), json={"a": 1}).json() == {"echo": {"a": 1}}


def test_the_port_is_the_one_the_server_bound_and_says_so() -> None:
    with ServerProcess(MODELS / "sync_echo") as server:
        assert serves(server)
        assert f"listening on http://127.0.0.1:{server.port} " in server.logs()


def test_the_port_is_unknown_until_started() -> None:
    server = ServerProcess(MODELS / "sync_echo")
    with pytest.raises(RuntimeError, match="start"):
        server.url("/")


def test_a_restart_reads_the_port_of_the_new_process() -> None:
    with ServerProcess(MODELS / "sync_echo") as server:
        first = server.port
        server.stop()
        # Held, so the new process cannot get the old port back by chance.
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", first))
            server.start()
        assert server.port != first
        assert serves(server)


def test_a_port_given_in_the_arguments_is_used() -> None:
    port = free_port()
    with ServerProcess(MODELS / "sync_echo", "--port", str(port)) as server:
        assert server.port == port
        assert serves(server)


def test_a_log_level_hiding_the_port_line_is_refused_without_a_port() -> None:
    with pytest.raises(ValueError, match="--port"):
        ServerProcess(MODELS / "sync_echo", "--log-level", "warning")


def test_a_server_that_exits_before_listening_says_so(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.py").write_text("raise SystemExit('no model here')\n")
    server = ServerProcess(tmp_path)
    with pytest.raises(RuntimeError, match="exited with code"):
        server.start()


def test_free_port_is_free_and_outside_the_ephemeral_range() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    if low <= 12_000:
        pytest.skip(f"the ephemeral range starts at {low}: no room below it")
    port = free_port()
    assert 1024 <= port < low
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
