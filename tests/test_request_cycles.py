"""A served request leaves no reference cycle behind: its objects go with their refcount.

A cycle per request (an exchange and its deadline holding each other, or the scope's
state holding a method of the exchange) is freed only by the cycle collector, which
then runs every few hundred requests and costs every request a share of a heap walk.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest

from kingpost.testing import InProcessServer
from tests.conftest import EXAMPLES, MODELS

REQUESTS = 20
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("model_dir", "path", "body"),
    [
        (MODELS / "sync_echo", "/predict", {"a": 1}),
        (EXAMPLES / "streaming", "/predict", {"text": "a few words"}),
        (EXAMPLES / "openai-compatible", "/v1/chat/completions", CHAT),
        (EXAMPLES / "openai-compatible", "/v1/chat/completions", {**CHAT, "stream": True}),
    ],
    ids=["predict", "streamed predict", "chat", "streamed chat"],
)
async def test_requests_leave_no_kingpost_object_in_a_cycle(
    model_dir: Path, path: str, body: dict[str, Any]
) -> None:
    async with InProcessServer(model_dir) as server:
        for _ in range(5):  # imports and first-request caches are not the request's
            await server.async_client.post(path, json=body)
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector would free lands in gc.garbage
        try:
            for _ in range(REQUESTS):
                reply = await server.async_client.post(path, json=body)
                assert reply.status_code == 200
            gc.collect()
            ours = [
                type(obj).__qualname__
                for obj in gc.garbage
                if type(obj).__module__.startswith("kingpost.")
            ]
            assert ours == []
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
