"""A client's Request-Timeout-Ms / Request-Deadline-Ms bound the request's deadline."""

from __future__ import annotations

import asyncio
import time

import pytest

from kingpost.server.exchange import Exchange


async def _nothing() -> dict:
    return {}


def exchange(*headers: tuple[bytes, bytes]) -> Exchange:
    async def build() -> Exchange:
        scope = {"type": "http", "method": "POST", "path": "/", "headers": list(headers)}
        return Exchange(scope, _nothing, _nothing)

    return asyncio.run(build())


def test_a_relative_timeout_shortens_the_deadline() -> None:
    ex = exchange((b"request-timeout-ms", b"250"))
    assert ex.within(1200).seconds == pytest.approx(0.25)


def test_an_absolute_deadline_counts_from_now() -> None:
    at = str(int((time.time() + 2) * 1000)).encode()
    ex = exchange((b"request-deadline-ms", at))
    assert 1.0 < ex.within(1200).seconds <= 2.0


def test_the_shorter_bound_wins_and_a_longer_one_leaves_the_server_timeout() -> None:
    ex = exchange((b"request-timeout-ms", b"900000"), (b"request-timeout-ms", b"5000"))
    assert ex.within(1200).seconds == pytest.approx(5.0)
    assert exchange((b"request-timeout-ms", b"9000000")).within(60).seconds == 60


def test_an_unreadable_value_is_ignored() -> None:
    assert exchange((b"request-timeout-ms", b"soon")).within(60).seconds == 60
