"""Server-sent events framing, as the OpenAI and Anthropic streaming APIs use it.

A hook that returns an async generator of these strings is streamed by the server
as ``text/event-stream`` chunk by chunk.

    >>> sse_event({"x": 1})
    'data: {"x":1}\\n\\n'
    >>> sse_event({"type": "ping"}, event="ping")
    'event: ping\\ndata: {"type":"ping"}\\n\\n'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from pydantic import BaseModel

SSE_DONE = "data: [DONE]\n\n"
"""The sentinel OpenAI streams end with."""


def sse_event(data: BaseModel | Mapping[str, Any], event: str | None = None) -> str:
    """Frame one JSON payload as an SSE event (with an ``event:`` line when named)."""
    payload = data.model_dump_json() if isinstance(data, BaseModel) else orjson.dumps(data).decode()
    if event is None:
        return f"data: {payload}\n\n"
    return f"event: {event}\ndata: {payload}\n\n"


def parse_sse(text: str) -> list[tuple[str | None, str]]:
    """Split SSE text into (event name or None, data) pairs; the inverse of sse_event.

    >>> parse_sse('event: ping\\ndata: {}\\n\\ndata: [DONE]\\n\\n')
    [('ping', '{}'), (None, '[DONE]')]
    """
    messages: list[tuple[str | None, str]] = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        event: str | None = None
        data: list[str] = []
        for line in block.split("\n"):
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)
        if data:
            messages.append((event, "\n".join(data)))
    return messages
