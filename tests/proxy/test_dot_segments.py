"""Dot segments never climb out of a forwarded path, plain or percent-encoded."""

from __future__ import annotations

import pytest

from tests.hostile.raw import get, raw_exchange, status_of
from tests.proxy.custom_servers import FastAPIServer, FastAPIServers


@pytest.fixture(scope="module")
def custom(shared_fastapi_servers: FastAPIServers) -> FastAPIServer:
    return shared_fastapi_servers.start()


@pytest.mark.parametrize(
    "path",
    [
        "/environments/production/sync/../../etc/passwd",
        "/environments/production/sync/echo/%2e%2e/%2E%2E/etc/passwd",
        "/environments/production/sync/echo/.%2e/x",
        "/echo/%252e%252e/x",
        "/echo/..%5c..%5cetc",
        "/echo/./x",
    ],
)
def test_dot_segments_do_not_reach_the_custom_server(custom: FastAPIServer, path: str) -> None:
    reply = raw_exchange(custom.kingpost.port, get(path))
    assert status_of(reply) == 400, reply
    assert b"application/json" in reply and b"segment" in reply


def test_dots_inside_a_name_still_reach_the_custom_server(custom: FastAPIServer) -> None:
    reply = raw_exchange(custom.kingpost.port, get("/environments/production/sync/echo/a..b/c.d"))
    assert status_of(reply) == 200 and b'"/echo/a..b/c.d"' in reply
