"""Speaking HTTP/1.1 by hand, for requests no well-behaved client would send."""

from __future__ import annotations

import socket
import time


def raw_exchange(port: int, request: bytes, timeout: float = 10.0) -> bytes:
    """Send ``request`` as is and read until the server closes (or ``timeout``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        deadline = time.monotonic() + timeout
        data = b""
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            data += chunk
            if _complete(data):
                break
        return data


def _complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return False


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/") else 0


def get(path: str, host: bool = True, extra: str = "") -> bytes:
    """A GET with ``Connection: close``; ``path`` goes on the request line unchanged."""
    host_line = "Host: 127.0.0.1\r\n" if host else ""
    return f"GET {path} HTTP/1.1\r\n{host_line}{extra}Connection: close\r\n\r\n".encode("latin-1")
