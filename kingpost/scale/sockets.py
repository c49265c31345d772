"""Websockets through Kingpost's front: the client's frames on their way to a replica.

A Serve handle call carries its arguments once and streams only its reply, so a
websocket needs a second channel for what the client sends after the handshake.
Each front process keeps one small async actor, ``WebSocketInbox`` (no CPU
reserved), started with the first websocket: the front puts each message the
client sends (``websocket.receive``, ``websocket.disconnect``) under the
connection's session id, in order; the replica's ``receive`` takes them out,
several at a time when they pile up. Its queues are bounded, so a replica that
reads slowly slows the front's reads of that client (TCP back-pressure), not
the front's memory. The replica's own messages come back as the reply stream
of the handle call, batched like an HTTP reply's.
"""

from __future__ import annotations

import asyncio
from typing import Any

import ray

from kingpost.scale.wire import Message

# Messages one connection may have waiting before the front stops reading its client.
QUEUE_LIMIT = 64
# Connections one inbox carries at once (each replica waiting on one holds a call).
MAX_CONNECTIONS = 10_000
GONE: Message = {"type": "websocket.disconnect", "code": 1006}


class WebSocketInbox:
    """Per-connection queues of client messages, put by the front, taken by a replica."""

    def __init__(self) -> None:
        self.queues: dict[str, asyncio.Queue[Message]] = {}

    def _queue(self, session: str) -> asyncio.Queue[Message]:
        queue = self.queues.get(session)
        if queue is None:
            queue = self.queues[session] = asyncio.Queue(QUEUE_LIMIT)
        return queue

    async def put(self, session: str, message: Message) -> None:
        await self._queue(session).put(message)

    async def take(self, session: str) -> list[Message]:
        """The next message of ``session`` and every one queued behind it (waits for one)."""
        queue = self._queue(session)
        taken = [await queue.get()]
        while not queue.empty():
            taken.append(queue.get_nowait())
        return taken

    async def forget(self, session: str) -> None:
        queue = self.queues.pop(session, None)
        if queue is not None and not queue.full():
            queue.put_nowait(GONE)  # a replica still waiting in ``take`` returns


def start_inbox() -> Any:
    """A new inbox actor owned by this driver (it goes when the driver disconnects)."""
    remote: Any = ray.remote
    return remote(num_cpus=0, max_concurrency=MAX_CONNECTIONS)(WebSocketInbox).remote()
