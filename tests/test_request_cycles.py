"""A served request leaves no reference cycle behind: its objects go with their refcount.

A cycle per request (say, an exchange and its deadline holding each other) is freed only
by the cycle collector, which then runs every few hundred requests and costs every
request a share of a full heap walk.
"""

from __future__ import annotations

import gc

from kingpost.server.exchange import Deadline, Exchange
from kingpost.testing import InProcessServer
from tests.conftest import MODELS

REQUESTS = 50


def _left_in_cycles(kinds: tuple[type, ...]) -> int:
    gc.collect()
    found = sum(isinstance(obj, kinds) for obj in gc.garbage)
    gc.garbage.clear()
    return found


async def test_predict_requests_leave_no_exchange_in_a_cycle() -> None:
    async with InProcessServer(MODELS / "sync_echo") as server:
        for _ in range(5):  # imports and first-request caches are not the request's
            await server.async_client.post("/predict", json={"a": 1})
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector would free lands in gc.garbage
        try:
            for n in range(REQUESTS):
                reply = await server.async_client.post("/predict", json={"n": n})
                assert reply.status_code == 200
            assert _left_in_cycles((Exchange, Deadline)) == 0
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
