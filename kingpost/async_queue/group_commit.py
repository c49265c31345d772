"""Group commit: items that arrive while a write is under way go into the next one.

Each caller waits until the write that holds its item is done (or failed), so
an answer that depends on the write (a ``request_id``) is durable when given.
Under load, one transaction carries many items; alone, an item is written one loop turn
after it came.

    submits = GroupCommit(lambda items: store.run(store.submit, items))
    await submits.add(new_request)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class GroupCommit(Generic[T]):
    def __init__(self, write: Callable[[list[T]], Awaitable[Any]]) -> None:
        self.write = write
        self._pending: list[tuple[T, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def add(self, item: T) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._writer is None:
            self._writer = asyncio.create_task(self._drain())
        await future

    async def _drain(self) -> None:
        try:
            # One turn of the loop first: requests read in this turn join the write.
            await asyncio.sleep(0)
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    await self.write([item for item, _ in batch])
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                else:
                    for _, future in batch:
                        if not future.done():
                            future.set_result(None)
        finally:
            self._writer = None
