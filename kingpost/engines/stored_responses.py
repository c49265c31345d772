"""The stored-response operations of ``/v1/responses``, answered from a ResponseStore.

``GET`` / ``DELETE /v1/responses/{id}``, ``GET /v1/responses/{id}/input_items``,
``POST /v1/responses/{id}/cancel``, and ``background: true`` responses: generation
runs on as a task, every stream event is kept, and ``GET ...?stream=true&
starting_after=N`` replays the events after N and follows the rest as they come.
Each operation returns the body (or stream) in OpenAI's shapes; an unknown id raises a
404 RequestError, a bad parameter InvalidParameterError (rendered in OpenAI's dialect).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

from kingpost.engines.response_store import ResponseStore
from kingpost.errors import InvalidParameterError, RequestError

logger = logging.getLogger("kingpost.engines")

FOLLOW_INTERVAL_S = 0.05  # how often a resumed stream looks for new events
FOLLOW_LIMIT_S = 3600.0  # a resumed stream gives up on a response that never ends
TERMINAL = ("completed", "incomplete", "failed", "cancelled")


class StoredResponses:
    """Operations on stored responses, and the background responses still running."""

    def __init__(self, store: Callable[[], ResponseStore]) -> None:
        self._store = store
        self._running: dict[str, asyncio.Task[None]] = {}

    async def retrieve(
        self, response_id: str, *, stream: bool = False, starting_after: int | None = None
    ) -> dict[str, Any] | AsyncIterator[str]:
        response = await asyncio.to_thread(self._store().get, response_id)
        if response is None:
            raise _not_found(response_id)
        if not stream:
            return response
        if not response.get("background"):
            raise InvalidParameterError(
                "stream", "only a background response can be streamed again"
            )
        return self._follow(response_id, -1 if starting_after is None else starting_after)

    async def delete(self, response_id: str) -> dict[str, Any]:
        task = self._running.pop(response_id, None)
        if task is not None:
            task.cancel()
        if not await asyncio.to_thread(self._store().delete, response_id):
            raise _not_found(response_id)
        return {"id": response_id, "object": "response.deleted", "deleted": True}

    async def input_items(
        self, response_id: str, *, after: str | None = None, limit: int = 20, order: str = "desc"
    ) -> dict[str, Any]:
        if not 1 <= limit <= 100:
            raise InvalidParameterError("limit", "must be 1 to 100")
        if order not in ("asc", "desc"):
            raise InvalidParameterError("order", "must be asc or desc")
        page = await asyncio.to_thread(
            self._store().input_items, response_id, after=after, limit=limit, order=order
        )
        if page is None:
            raise _not_found(response_id)
        items, more = page
        return {
            "object": "list",
            "data": items,
            "first_id": items[0]["id"] if items else None,
            "last_id": items[-1]["id"] if items else None,
            "has_more": more,
        }

    async def cancel(self, response_id: str) -> dict[str, Any]:
        store = self._store()
        response = await asyncio.to_thread(store.get, response_id)
        if response is None:
            raise _not_found(response_id)
        if not response.get("background"):
            raise InvalidParameterError(None, "only a background response can be cancelled")
        task = self._running.get(response_id)
        if task is not None and response.get("status") not in TERMINAL:
            await asyncio.to_thread(store.request_cancel, response_id)
            task.cancel()
            await asyncio.wait([task], timeout=10)
        return await asyncio.to_thread(store.get, response_id) or response

    # ---- background responses -----------------------------------------------------

    async def start_background(
        self,
        response: dict[str, Any],
        events: AsyncGenerator[str, None],
        save: Callable[[dict[str, Any]], Any],
    ) -> dict[str, Any]:
        """Keep ``response`` as queued, then run ``events`` (its SSE stream) as a task
        keeping each event and the final response; return the queued response."""
        queued = {**response, "status": "queued", "background": True}
        await save(queued)
        task = asyncio.create_task(self._run(queued, events, save))
        self._running[queued["id"]] = task
        task.add_done_callback(lambda _: self._running.pop(queued["id"], None))
        return queued

    async def _run(
        self,
        queued: dict[str, Any],
        events: AsyncGenerator[str, None],
        save: Callable[[dict[str, Any]], Any],
    ) -> None:
        store = self._store()
        response_id = queued["id"]
        final: dict[str, Any] | None = None
        try:
            async for chunk in events:
                for number, data, payload in _split_events(chunk):
                    await asyncio.to_thread(store.append_event, response_id, number, data)
                    if payload.get("type") in _FINAL_EVENTS:
                        final = payload.get("response")
        except asyncio.CancelledError:
            await events.aclose()
            await save({**queued, "status": "cancelled"})
            return
        except Exception:
            logger.exception("background response %s failed", response_id)
            await save({**queued, "status": "failed"})
            return
        await save({**(final or queued), "background": True})

    async def _follow(self, response_id: str, after: int) -> AsyncIterator[str]:
        """The kept events after ``after``, then new ones until the response is over."""
        store = self._store()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FOLLOW_LIMIT_S
        while loop.time() < deadline:
            for number, data in await asyncio.to_thread(store.events_after, response_id, after):
                after = number
                yield data
            response = await asyncio.to_thread(store.get, response_id)
            if response is None or response.get("status") in TERMINAL:
                for number, data in await asyncio.to_thread(store.events_after, response_id, after):
                    after = number
                    yield data
                return
            await asyncio.sleep(FOLLOW_INTERVAL_S)


_FINAL_EVENTS = ("response.completed", "response.incomplete", "response.failed")


def _split_events(chunk: str) -> list[tuple[int, str, dict[str, Any]]]:
    """The SSE events in ``chunk``: sequence number, the event's text, its payload."""
    found: list[tuple[int, str, dict[str, Any]]] = []
    for block in chunk.split("\n\n"):
        data = next((line[6:] for line in block.splitlines() if line.startswith("data: ")), None)
        if data is None:
            continue
        payload = json.loads(data)
        found.append((int(payload.get("sequence_number", len(found))), block + "\n\n", payload))
    return found


def _not_found(response_id: str) -> RequestError:
    return RequestError(f"no stored response with id {response_id!r}", 404)
