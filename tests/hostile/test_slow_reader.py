"""A client that never reads a stream: bounded memory, cut after the streaming timeout."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from kingpost.testing import ServerProcess

MODEL = """
class Model:
    def predict(self, model_input):
        for _ in range(256):
            yield b"x" * (1 << 20)  # a new MiB each time
"""


def rss(server: ServerProcess) -> int:
    assert server.process is not None
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1])


def in_flight(server: ServerProcess) -> float:
    text = httpx.get(server.url("/metrics")).text
    line = next(line for line in text.splitlines() if line.startswith("kingpost_requests_in"))
    return float(line.split()[1])


def test_a_reader_that_stops_holds_little_memory_and_is_cut(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.py").write_text(MODEL)
    (tmp_path / "config.yaml").write_text("runtime:\n  streaming_read_timeout: 2\n")
    server = start_server(tmp_path)
    before = rss(server)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\ncontent-length: 2\r\n\r\n{}")
        time.sleep(1.5)  # the model could have made 256 MiB by now
        grown_kib = rss(server) - before
        assert grown_kib < 48 * 1024, f"RSS grew by {grown_kib} KiB for a reader that reads nothing"
        deadline = time.monotonic() + 15
        while in_flight(server) > 0:  # cut after streaming_read_timeout: its slot is free
            assert time.monotonic() < deadline, server.logs()
            time.sleep(0.1)
