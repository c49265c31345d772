"""Stored responses of ``/v1/responses``, in an embedded SQLite file that outlives restarts.

A response made with ``store: true`` (the API's default) is kept with the input
items that produced it and the conversation before them, so that a later request's
``previous_response_id`` continues it, and ``GET`` / ``DELETE /v1/responses/{id}`` and
``.../input_items`` can answer. A background response also keeps its stream events,
so a client can resume reading after the last one it saw, and a cancel flag its
generation polls. Retention is bounded by count and by age; the oldest go first.

    store = ResponseStore(Path("responses.sqlite3"))
    store.save(response, input_items=[...], history=[])
    store.conversation(response["id"])   # history + inputs + outputs, as input items
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

DEFAULT_MAX_RESPONSES = 10_000
DEFAULT_MAX_AGE_S = 30 * 24 * 3600.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    status TEXT NOT NULL,
    body TEXT NOT NULL,
    input_items TEXT NOT NULL,
    history TEXT NOT NULL,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS responses_by_age ON responses (created_at);
CREATE TABLE IF NOT EXISTS response_events (
    response_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (response_id, sequence)
);
"""


class ResponseStore:
    """Responses by id, in one SQLite file (``":memory:"`` keeps them for the process)."""

    def __init__(
        self,
        path: Path | str,
        *,
        max_responses: int = DEFAULT_MAX_RESPONSES,
        max_age_s: float = DEFAULT_MAX_AGE_S,
    ) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_responses = max_responses
        self.max_age_s = max_age_s
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ---- responses ----------------------------------------------------------------

    def save(
        self,
        response: dict[str, Any],
        *,
        input_items: list[dict[str, Any]] | None = None,
        history: list[dict[str, Any]] | None = None,
    ) -> None:
        """Keep (or update) a response; the inputs and history are kept on first save."""
        with self._lock:
            self._db.execute(
                "INSERT INTO responses (id, created_at, status, body, input_items, history)"
                " VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET status = excluded.status, body = excluded.body",
                (
                    response["id"],
                    float(response.get("created_at") or time.time()),
                    str(response.get("status") or "completed"),
                    json.dumps(response),
                    json.dumps(_with_ids(input_items or [], response["id"])),
                    json.dumps(history or []),
                ),
            )
            self._prune()

    def get(self, response_id: str) -> dict[str, Any] | None:
        row = self._one("SELECT body FROM responses WHERE id = ?", response_id)
        return json.loads(row[0]) if row else None

    def delete(self, response_id: str) -> bool:
        with self._lock:
            deleted = self._db.execute("DELETE FROM responses WHERE id = ?", (response_id,))
            self._db.execute("DELETE FROM response_events WHERE response_id = ?", (response_id,))
            return deleted.rowcount > 0

    def input_items(
        self, response_id: str, *, after: str | None = None, limit: int = 20, order: str = "desc"
    ) -> tuple[list[dict[str, Any]], bool] | None:
        """A page of the input items of a response, and whether more follow; None if unknown."""
        row = self._one("SELECT input_items FROM responses WHERE id = ?", response_id)
        if row is None:
            return None
        items: list[dict[str, Any]] = json.loads(row[0])
        if order == "desc":
            items.reverse()
        if after is not None:
            ids = [item.get("id") for item in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        return items[:limit], len(items) > limit

    def conversation(self, response_id: str) -> list[dict[str, Any]] | None:
        """Everything a follow-up to this response continues, as input items; None if unknown."""
        row = self._one(
            "SELECT history, input_items, body FROM responses WHERE id = ?", response_id
        )
        if row is None:
            return None
        history, inputs, body = (json.loads(value) for value in row)
        outputs = [_as_input(item) for item in body.get("output") or []]
        return [*history, *inputs, *(item for item in outputs if item is not None)]

    # ---- background responses: cancel and resumable streams --------------------------

    def request_cancel(self, response_id: str) -> bool:
        with self._lock:
            done = self._db.execute(
                "UPDATE responses SET cancel_requested = 1 WHERE id = ?", (response_id,)
            )
            return done.rowcount > 0

    def cancel_requested(self, response_id: str) -> bool:
        row = self._one("SELECT cancel_requested FROM responses WHERE id = ?", response_id)
        return bool(row and row[0])

    def append_event(self, response_id: str, sequence: int, data: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO response_events (response_id, sequence, data)"
                " VALUES (?, ?, ?)",
                (response_id, sequence, data),
            )

    def events_after(self, response_id: str, sequence: int = -1) -> list[tuple[int, str]]:
        """The stream events of a background response past ``sequence``, in order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT sequence, data FROM response_events"
                " WHERE response_id = ? AND sequence > ? ORDER BY sequence",
                (response_id, sequence),
            ).fetchall()
        return [(int(number), str(data)) for number, data in rows]

    # ---- internals -------------------------------------------------------------------

    def _one(self, query: str, *args: Any) -> tuple[Any, ...] | None:
        with self._lock:
            row = self._db.execute(query, args).fetchone()
        return tuple(row) if row is not None else None

    def _prune(self) -> None:
        oldest = time.time() - self.max_age_s
        self._db.execute(
            "DELETE FROM responses WHERE created_at < ? OR id IN (SELECT id FROM responses"
            " ORDER BY created_at DESC LIMIT -1 OFFSET ?)",
            (oldest, self.max_responses),
        )
        self._db.execute(
            "DELETE FROM response_events WHERE response_id NOT IN (SELECT id FROM responses)"
        )


def _with_ids(items: list[dict[str, Any]], response_id: str) -> list[dict[str, Any]]:
    """Input items as the API lists them: each with an id (``msg_...`` when it had none)."""
    named = []
    for index, item in enumerate(items):
        item = dict(item)
        item.setdefault("id", f"msg_{response_id.removeprefix('resp_')}_{index}")
        item.setdefault("type", "message")
        named.append(item)
    return named


def _as_input(item: dict[str, Any]) -> dict[str, Any] | None:
    """An output item of a response, as the input item a follow-up request would send."""
    if item.get("type") == "message":
        text = "".join(
            part.get("text", "") for part in item.get("content") or [] if isinstance(part, dict)
        )
        return {"type": "message", "role": "assistant", "content": text}
    if item.get("type") == "function_call":
        return {
            "type": "function_call",
            "call_id": item.get("call_id"),
            "name": item.get("name"),
            "arguments": item.get("arguments", ""),
        }
    return None
