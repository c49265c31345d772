"""predict_concurrency and endpoint_concurrency bound the model; nothing else does."""

from __future__ import annotations

import asyncio

import httpx


async def _fire(url: str, count: int, path: str) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=30) as client:
        return await asyncio.gather(*(client.post(url + path, json={}) for _ in range(count)))


def test_predict_concurrency_is_enforced(start_server) -> None:
    server = start_server("concurrency")
    replies = asyncio.run(_fire(server.base_url, 8, "/predict"))
    assert all(r.status_code == 200 for r in replies)
    assert max(r.json()["peak"] for r in replies) == 2


def test_endpoint_hooks_have_their_own_limit(start_server) -> None:
    server = start_server("concurrency")
    replies = asyncio.run(_fire(server.base_url, 9, "/v1/embeddings"))
    assert max(r.json()["peak"] for r in replies) == 3


def test_no_hidden_thread_cap_below_the_configured_concurrency(start_server) -> None:
    # Each call waits until 50 calls are inside predict at once: a pool smaller
    # than the configured concurrency would deadlock it into a timeout.
    server = start_server("many_threads")
    replies = asyncio.run(_fire(server.base_url, 50, "/predict"))
    assert [r.status_code for r in replies] == [200] * 50
