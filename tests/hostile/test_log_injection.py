"""Hostile request lines: control characters never forge or colour a log line."""

from __future__ import annotations

import time
from collections.abc import Callable

from kingpost.testing import ServerProcess
from tests.conftest import MODELS
from tests.hostile.raw import get, raw_exchange, status_of


def test_control_characters_in_a_path_are_escaped_in_the_access_log(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server(MODELS / "sync_echo")
    fake = "2026-01-01 00:00:00,000 INFO  [x] kingpost.access: GET /admin 200"
    forged = "/predict%0a" + fake.replace(" ", "%20") + "%1b[2J%00"
    assert status_of(raw_exchange(server.port, get(forged))) == 404
    deadline = time.monotonic() + 5
    while "kingpost.access: GET /predict" not in server.logs():
        assert time.monotonic() < deadline, server.logs()
        time.sleep(0.05)
    logs = server.logs()
    (line,) = [line for line in logs.splitlines() if "kingpost.access" in line]
    latency = line.rsplit(" ", 1)[1]
    assert line.endswith(r"/predict\n" + fake + r"\x1b[2J\x00 404 " + latency)
    assert "\x1b" not in logs and "\x00" not in logs
