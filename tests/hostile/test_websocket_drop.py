"""A websocket client that vanishes without a close frame costs one INFO line, no traceback."""

from __future__ import annotations

import base64
import os
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kingpost.testing import ServerProcess

MODEL = """
import fastapi


class Model:
    async def websocket(self, websocket: fastapi.WebSocket):
        async for text in websocket.iter_text():
            await websocket.send_text("echo " + text)
"""


def open_and_drop(port: int, send_first: bool) -> None:
    """Handshake, maybe send one masked frame, then reset the connection (no close frame)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            f"GET /v1/websocket HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        assert sock.recv(4096).startswith(b"HTTP/1.1 101")
        if send_first:
            mask = os.urandom(4)
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(b"hi"))
            sock.sendall(b"\x81\x82" + mask + payload)
            sock.recv(4096)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@pytest.mark.parametrize("send_first", [False, True])
def test_a_dropped_websocket_logs_one_info_line(
    start_server: Callable[..., ServerProcess], tmp_path: Path, send_first: bool
) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.py").write_text(MODEL)
    (tmp_path / "config.yaml").write_text("runtime:\n  transport:\n    kind: websocket\n")
    server = start_server(tmp_path)
    open_and_drop(server.port, send_first)
    deadline = time.monotonic() + 5
    while "without a close frame" not in server.logs():
        assert time.monotonic() < deadline, server.logs()
        time.sleep(0.05)
    logs = server.logs()
    assert logs.count("without a close frame") == 1
    assert "Traceback" not in logs and "ERROR" not in logs
