"""Picking a TCP port for a child process that must be told its port before it starts."""

from __future__ import annotations

import random
import socket
from pathlib import Path


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
