"""Stored responses: kept across a reopen, chained into conversations, bounded."""

from __future__ import annotations

import time
from pathlib import Path

from kingpost.engines.response_store import ResponseStore


def response(response_id: str, text: str = "hi", created: float | None = None) -> dict:
    return {
        "id": response_id,
        "object": "response",
        "created_at": created or time.time(),
        "status": "completed",
        "output": [
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text}],
            }
        ],
    }


def test_a_saved_response_survives_reopening_the_file(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite3"
    store = ResponseStore(path)
    store.save(response("resp_1"), input_items=[{"role": "user", "content": "Hello"}])
    store.close()
    again = ResponseStore(path)
    kept = again.get("resp_1")
    assert kept is not None and kept["output"] == response("resp_1")["output"]
    assert again.get("resp_nope") is None


def test_a_conversation_is_the_history_the_inputs_and_the_reply(tmp_path: Path) -> None:
    store = ResponseStore(tmp_path / "r.sqlite3")
    store.save(response("resp_1", "Paris."), input_items=[{"role": "user", "content": "Capital?"}])
    first = store.conversation("resp_1")
    assert first is not None
    store.save(
        response("resp_2", "Lyon."),
        input_items=[{"role": "user", "content": "Another?"}],
        history=first,
    )
    turns = [(item["role"], item["content"]) for item in store.conversation("resp_2") or []]
    assert turns == [
        ("user", "Capital?"),
        ("assistant", "Paris."),
        ("user", "Another?"),
        ("assistant", "Lyon."),
    ]


def test_input_items_come_in_pages_with_ids(tmp_path: Path) -> None:
    store = ResponseStore(tmp_path / "r.sqlite3")
    items = [{"role": "user", "content": str(n)} for n in range(3)]
    store.save(response("resp_1"), input_items=items)
    page, more = store.input_items("resp_1", limit=2, order="asc") or ([], False)
    assert [item["content"] for item in page] == ["0", "1"] and more
    rest, more = store.input_items("resp_1", after=page[-1]["id"], order="asc") or ([], True)
    assert [item["content"] for item in rest] == ["2"] and not more
    assert store.input_items("resp_nope") is None


def test_delete_removes_the_response_and_its_events(tmp_path: Path) -> None:
    store = ResponseStore(tmp_path / "r.sqlite3")
    store.save(response("resp_1"))
    store.append_event("resp_1", 0, "data: {}")
    assert store.delete("resp_1") and not store.delete("resp_1")
    assert store.events_after("resp_1") == []


def test_background_events_resume_after_the_last_one_seen(tmp_path: Path) -> None:
    store = ResponseStore(tmp_path / "r.sqlite3")
    store.save(response("resp_1"))
    for number in range(4):
        store.append_event("resp_1", number, f"event {number}")
    assert store.events_after("resp_1", 1) == [(2, "event 2"), (3, "event 3")]
    assert not store.cancel_requested("resp_1")
    assert store.request_cancel("resp_1") and store.cancel_requested("resp_1")


def test_retention_drops_the_oldest_past_the_count_and_the_age(tmp_path: Path) -> None:
    store = ResponseStore(tmp_path / "r.sqlite3", max_responses=2, max_age_s=3600)
    store.save(response("resp_old", created=time.time() - 7200))
    for name in ("resp_a", "resp_b", "resp_c"):
        store.save(response(name))
    assert [store.get(name) is not None for name in ("resp_old", "resp_a", "resp_b", "resp_c")] == [
        False,
        False,
        True,
        True,
    ]
