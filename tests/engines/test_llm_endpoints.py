"""The shared LLM layer, pinned with a scripted engine: every API, streamed and not.

The engine (tests/engines/scripted_engine.py) replays the tokens the request spells
out, split on "|", so each test states exactly which tokens the model produced and
checks what each API makes of them: stop sequences split across tokens, tool calls
held back and released, n > 1, usage counts and the error event of a failed stream.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

import pytest

from kingpost.engines.generation import ChatTurn
from kingpost.protocols.sse import parse_sse
from tests.engines.scripted_engine import ScriptedEngine

WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}
CALL = ['{"name": "get_weather", ', '"arguments": {"city": ', '"Paris"}}']
"""A tool call, in the shape the layer asks models for, cut into three tokens."""


@pytest.fixture
def engine() -> ScriptedEngine:
    return ScriptedEngine({"model_name": "scripted"})


async def call(engine: ScriptedEngine, hook: str, body: dict[str, Any]) -> Any:
    """Run one endpoint hook: its JSON reply, or its stream as a list of (event, data)."""
    method = getattr(engine, hook)
    # The hooks do not read the request argument; pass it only where it is declared.
    takes_request = len(inspect.signature(method).parameters) == 2
    result = await (method(body, None) if takes_request else method(body))
    if isinstance(result, dict):
        return result
    assert hasattr(result, "__aiter__"), f"{hook} answered {result!r}"
    chunks = [chunk async for chunk in result]
    text = "".join(c.decode() if isinstance(c, bytes) else c for c in chunks)
    return [
        (event, data if data == "[DONE]" else json.loads(data)) for event, data in parse_sse(text)
    ]


def script(*tokens: str) -> str:
    return "|".join(tokens)


def chat(*tokens: str, **fields: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": script(*tokens)}], **fields}


def chat_prompt_tokens(engine: ScriptedEngine, *tokens: str) -> int:
    return len(engine.tokenize(engine.render_chat([ChatTurn("user", script(*tokens))])))


def chat_deltas(events: list[tuple[str | None, Any]]) -> list[str]:
    """The content deltas of a chat stream, without the opening role chunk's ""."""
    return [
        choice["delta"]["content"]
        for _, data in events
        if data != "[DONE]" and "choices" in data
        for choice in data["choices"]
        if choice["delta"].get("content")
    ]


def finish_reasons(events: list[tuple[str | None, Any]]) -> list[str]:
    return [
        choice["finish_reason"]
        for _, data in events
        if data != "[DONE]" and "choices" in data
        for choice in data["choices"]
        if choice.get("finish_reason")
    ]


def tools_chat(*tokens: str, **fields: Any) -> dict[str, Any]:
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}
    return chat(*tokens, tools=[tool], **fields)


# ---- chat completions ----------------------------------------------------------------


async def test_chat_replies_with_the_tokens_and_true_usage(engine: ScriptedEngine) -> None:
    reply = await call(engine, "chat_completions", chat("Hel", "lo", " there"))
    assert reply["choices"][0]["message"]["content"] == "Hello there"
    assert reply["choices"][0]["finish_reason"] == "stop"
    prompt = chat_prompt_tokens(engine, "Hel", "lo", " there")
    assert reply["usage"] == {
        "prompt_tokens": prompt,
        "completion_tokens": 3,
        "total_tokens": prompt + 3,
    }
    assert reply["model"] == "scripted"


async def test_chat_stops_at_a_stop_sequence_split_across_tokens(engine: ScriptedEngine) -> None:
    body = chat("Hello wo", "rld E", "ND more", "never sent", stop=["END"])
    reply = await call(engine, "chat_completions", body)
    assert reply["choices"][0]["message"]["content"] == "Hello world "
    assert reply["choices"][0]["finish_reason"] == "stop"
    assert reply["usage"]["completion_tokens"] == 3  # the token holding the stop counts
    assert engine.yielded == 3  # the engine was stopped, not run to its end
    assert engine.closed == 1
    assert engine.requests[0].stop == ["END"]


async def test_a_streamed_chat_holds_back_a_possible_stop_and_never_sends_it(
    engine: ScriptedEngine,
) -> None:
    events = await call(
        engine, "chat_completions", chat("Hello wo", "rld E", "ND more", stream=True, stop="END")
    )
    assert chat_deltas(events) == ["Hello wo", "rld "]  # the "E" waited, then was cut
    assert finish_reasons(events) == ["stop"]
    assert events[-1] == (None, "[DONE]")


async def test_a_stop_prefix_that_does_not_complete_is_released(engine: ScriptedEngine) -> None:
    events = await call(
        engine, "chat_completions", chat("abc E", "Nx", " tail", stream=True, stop=["END"])
    )
    assert chat_deltas(events) == ["abc ", "ENx", " tail"]
    reply = await call(engine, "chat_completions", chat("abc E", "N", stop=["END"]))
    assert reply["choices"][0]["message"]["content"] == "abc EN"  # flushed at the end


async def test_chat_stops_at_max_tokens_with_length(engine: ScriptedEngine) -> None:
    reply = await call(engine, "chat_completions", chat("a", "b", "c", "d", max_tokens=2))
    assert reply["choices"][0]["message"]["content"] == "ab"
    assert reply["choices"][0]["finish_reason"] == "length"
    assert reply["usage"]["completion_tokens"] == 2
    assert engine.requests[0].params.max_tokens == 2


async def test_max_tokens_defaults_to_the_room_left_in_the_context() -> None:
    engine = ScriptedEngine(context_length=100)
    await call(engine, "chat_completions", chat("hi"))
    prompt = chat_prompt_tokens(engine, "hi")
    assert engine.requests[0].params.max_tokens == 100 - prompt


async def test_chat_with_n_runs_n_generations_each_with_its_own_seed(
    engine: ScriptedEngine,
) -> None:
    reply = await call(engine, "chat_completions", chat("seed ", "<seed>", n=3, seed=7))
    texts = [choice["message"]["content"] for choice in reply["choices"]]
    assert texts == ["seed 7", "seed 8", "seed 9"]
    assert [choice["index"] for choice in reply["choices"]] == [0, 1, 2]
    prompt = chat_prompt_tokens(engine, "seed ", "<seed>")
    # The prompt is counted once, the completions of all three choices together.
    assert reply["usage"] == {
        "prompt_tokens": prompt,
        "completion_tokens": 6,
        "total_tokens": prompt + 6,
    }
    assert len(engine.requests) == 3


async def test_a_streamed_chat_reports_usage_when_asked(engine: ScriptedEngine) -> None:
    body = chat("one", " two", stream=True, stream_options={"include_usage": True})
    events = await call(engine, "chat_completions", body)
    usage = [data["usage"] for _, data in events if data != "[DONE]" and data.get("usage")]
    prompt = chat_prompt_tokens(engine, "one", " two")
    assert usage == [{"prompt_tokens": prompt, "completion_tokens": 2, "total_tokens": prompt + 2}]
    assert chat_deltas(events) == ["one", " two"]


async def test_a_streamed_tool_call_is_never_text_and_its_arguments_come_as_written(
    engine: ScriptedEngine,
) -> None:
    events = await call(engine, "chat_completions", tools_chat(*CALL, stream=True))
    assert chat_deltas(events) == []  # no piece of the call leaked out as text
    calls = [
        call
        for _, data in events
        if data != "[DONE]" and "choices" in data
        for choice in data["choices"]
        for call in choice["delta"].get("tool_calls") or []
    ]
    opening, *rest = calls
    assert opening["id"].startswith("call_")
    assert (opening["index"], opening["type"]) == (0, "function")
    assert opening["function"] == {"name": "get_weather", "arguments": ""}
    # later chunks carry only the index and the next piece, as OpenAI's do
    assert all(set(piece) == {"index", "function"} for piece in rest)
    assert all(set(piece["function"]) == {"arguments"} for piece in rest)
    arguments = "".join(piece["function"]["arguments"] for piece in rest)
    assert json.loads(arguments) == {"city": "Paris"}
    assert finish_reasons(events) == ["tool_calls"]


async def test_a_tool_call_in_a_complete_reply(engine: ScriptedEngine) -> None:
    reply = await call(engine, "chat_completions", tools_chat(*CALL))
    choice = reply["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (tool_call,) = choice["message"]["tool_calls"]
    assert tool_call["function"]["name"] == "get_weather"
    assert json.loads(tool_call["function"]["arguments"]) == {"city": "Paris"}
    assert reply["usage"]["completion_tokens"] == 3


async def test_held_back_text_that_is_no_call_is_released_at_the_end(
    engine: ScriptedEngine,
) -> None:
    events = await call(engine, "chat_completions", tools_chat("{not", " a call", "}", stream=True))
    assert chat_deltas(events) == ["{not a call}"]  # all at once, once it could not be a call
    assert finish_reasons(events) == ["stop"]
    reply = await call(engine, "chat_completions", tools_chat('{"name": "unknown_tool"}'))
    assert reply["choices"][0]["message"]["content"] == '{"name": "unknown_tool"}'
    assert reply["choices"][0]["message"]["tool_calls"] is None


async def test_a_plain_answer_streams_as_it_comes_even_with_tools(engine: ScriptedEngine) -> None:
    events = await call(engine, "chat_completions", tools_chat("Sun", "ny", stream=True))
    assert chat_deltas(events) == ["Sun", "ny"]
    assert finish_reasons(events) == ["stop"]


async def test_a_required_tool_call_constrains_the_output_to_the_call(
    engine: ScriptedEngine,
) -> None:
    await call(engine, "chat_completions", tools_chat(*CALL, tool_choice="required"))
    schema = engine.requests[0].params.json_schema
    assert schema is not None
    assert schema["properties"]["name"] == {"const": "get_weather"}
    assert schema["properties"]["arguments"] == WEATHER
    await call(engine, "chat_completions", tools_chat(*CALL))
    assert engine.requests[1].params.json_schema is None  # "auto" leaves the model free


async def test_a_stream_that_fails_midway_ends_with_an_error_event(
    engine: ScriptedEngine,
) -> None:
    events = await call(engine, "chat_completions", chat("Hel", "lo", "<error>", stream=True))
    assert chat_deltas(events) == ["Hel", "lo"]
    assert events[-1][1] == {
        "error": {
            "message": "generation failed; the server log has the details",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }
    assert (None, "[DONE]") not in events


async def test_a_complete_reply_that_fails_raises(engine: ScriptedEngine) -> None:
    with pytest.raises(RuntimeError, match="failed mid-generation"):
        await call(engine, "chat_completions", chat("Hel", "<error>"))


async def test_chat_logprobs_come_with_their_tokens(engine: ScriptedEngine) -> None:
    reply = await call(engine, "chat_completions", chat("a", "b", logprobs=True))
    tokens = [entry["token"] for entry in reply["choices"][0]["logprobs"]["content"]]
    assert tokens == ["a", "b"]
    events = await call(
        engine, "chat_completions", chat("a", "b", stream=True, logprobs=True, stop=["b"])
    )
    streamed = [
        entry["token"]
        for _, data in events
        if data != "[DONE]"
        for choice in data["choices"]
        if choice.get("logprobs")
        for entry in choice["logprobs"]["content"]
    ]
    assert streamed == ["a"]


# ---- completions -----------------------------------------------------------------------


async def test_a_completion_counts_the_prompt_as_tokenized(engine: ScriptedEngine) -> None:
    reply = await call(engine, "completions", {"prompt": "To|ken|s"})
    assert reply["choices"][0]["text"] == "Tokens"
    assert reply["choices"][0]["finish_reason"] == "stop"
    assert reply["usage"] == {"prompt_tokens": 8, "completion_tokens": 3, "total_tokens": 11}


async def test_a_completion_prompt_may_be_token_ids(engine: ScriptedEngine) -> None:
    reply = await call(engine, "completions", {"prompt": engine.tokenize("Hi|!")})
    assert reply["choices"][0]["text"] == "Hi!"
    assert reply["usage"]["prompt_tokens"] == 4


async def test_a_completion_stops_at_a_stop_sequence_split_across_tokens(
    engine: ScriptedEngine,
) -> None:
    body = {"prompt": script("one</", "en", "d>two", "three"), "stop": "</end>"}
    reply = await call(engine, "completions", body)
    assert reply["choices"][0]["text"] == "one"
    assert reply["usage"]["completion_tokens"] == 3
    events = await call(engine, "completions", {**body, "stream": True})
    texts = [
        data["choices"][0]["text"] for _, data in events if data != "[DONE]" and data["choices"]
    ]
    assert "".join(texts) == "one"
    assert [t for t in texts if "<" in t] == []


async def test_completions_run_every_prompt_n_times_in_order(engine: ScriptedEngine) -> None:
    body = {"prompt": ["a|<seed>", "b|<seed>"], "n": 2, "seed": 1}
    reply = await call(engine, "completions", body)
    assert [choice["text"] for choice in reply["choices"]] == ["a1", "a2", "b1", "b2"]
    assert [choice["index"] for choice in reply["choices"]] == [0, 1, 2, 3]
    assert reply["usage"] == {"prompt_tokens": 16, "completion_tokens": 8, "total_tokens": 24}


async def test_a_completion_at_max_tokens_ends_with_length(engine: ScriptedEngine) -> None:
    events = await call(
        engine,
        "completions",
        {
            "prompt": "a|b|c",
            "max_tokens": 1,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    chunks = [data for _, data in events if data != "[DONE]"]
    assert [c["choices"][0]["text"] for c in chunks if c["choices"]] == ["a", ""]
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]] == [None, "length"]
    assert chunks[-1]["usage"] == {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}


async def test_a_completion_echoes_the_prompt_when_asked(engine: ScriptedEngine) -> None:
    reply = await call(engine, "completions", {"prompt": "x|y", "echo": True})
    assert reply["choices"][0]["text"] == "x|yxy"


async def test_a_streamed_completion_that_fails_ends_with_an_error_event(
    engine: ScriptedEngine,
) -> None:
    events = await call(engine, "completions", {"prompt": "a|<error>", "stream": True})
    assert events[0][1]["choices"][0]["text"] == "a"
    assert events[-1][1]["error"]["type"] == "server_error"
    assert (None, "[DONE]") not in events


# ---- responses -------------------------------------------------------------------------


def responses_body(*tokens: str, **fields: Any) -> dict[str, Any]:
    return {"input": script(*tokens), **fields}


def response_tool() -> dict[str, Any]:
    return {"type": "function", "name": "get_weather", "parameters": WEATHER}


async def test_a_response_has_the_text_and_usage(engine: ScriptedEngine) -> None:
    reply = await call(engine, "responses", responses_body("Bon", "jour"))
    assert reply["status"] == "completed"
    (item,) = reply["output"]
    assert item["content"][0]["text"] == "Bonjour"
    prompt = chat_prompt_tokens(engine, "Bon", "jour")
    assert reply["usage"]["input_tokens"] == prompt
    assert reply["usage"]["output_tokens"] == 2
    assert reply["usage"]["total_tokens"] == prompt + 2


async def test_a_response_cut_by_max_output_tokens_is_incomplete(engine: ScriptedEngine) -> None:
    reply = await call(engine, "responses", responses_body("a", "b", "c", max_output_tokens=2))
    assert reply["status"] == "incomplete"
    assert reply["output"][0]["content"][0]["text"] == "ab"


async def test_a_response_can_be_a_function_call(engine: ScriptedEngine) -> None:
    reply = await call(engine, "responses", responses_body(*CALL, tools=[response_tool()]))
    (item,) = reply["output"]
    assert item["type"] == "function_call"
    assert item["name"] == "get_weather"
    assert json.loads(item["arguments"]) == {"city": "Paris"}


async def test_a_streamed_response_sends_deltas_then_completes(engine: ScriptedEngine) -> None:
    events = await call(engine, "responses", responses_body("Bon", "jour", stream=True))
    kinds = [event for event, _ in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    deltas = [data["delta"] for event, data in events if event == "response.output_text.delta"]
    assert deltas == ["Bon", "jour"]
    assert kinds[-1] == "response.completed"
    assert events[-1][1]["response"]["usage"]["output_tokens"] == 2


async def test_a_streamed_function_call_sends_no_text(engine: ScriptedEngine) -> None:
    body = responses_body(*CALL, tools=[response_tool()], stream=True)
    events = await call(engine, "responses", body)
    kinds = [event for event, _ in events]
    assert "response.output_text.delta" not in kinds
    done = [data for event, data in events if event == "response.function_call_arguments.done"]
    assert [json.loads(data["arguments"]) for data in done] == [{"city": "Paris"}]
    assert kinds[-1] == "response.completed"


async def test_a_streamed_response_that_fails_ends_with_an_error_event(
    engine: ScriptedEngine,
) -> None:
    events = await call(engine, "responses", responses_body("a", "<error>", stream=True))
    assert [d["delta"] for e, d in events if e == "response.output_text.delta"] == ["a"]
    assert "error" in events[-1][1]
    assert "response.completed" not in [event for event, _ in events]


# ---- Anthropic messages ----------------------------------------------------------------


def message_body(*tokens: str, **fields: Any) -> dict[str, Any]:
    return {"max_tokens": 100, **chat(*tokens), **fields}


def message_tool() -> dict[str, Any]:
    return {"name": "get_weather", "input_schema": WEATHER}


async def test_a_message_has_the_text_and_usage(engine: ScriptedEngine) -> None:
    reply = await call(engine, "messages", message_body("Hi", " there"))
    assert reply["content"] == [{"type": "text", "text": "Hi there"}]
    assert reply["stop_reason"] == "end_turn"
    assert reply["stop_sequence"] is None
    prompt = chat_prompt_tokens(engine, "Hi", " there")
    assert reply["usage"]["input_tokens"] == prompt
    assert reply["usage"]["output_tokens"] == 2


async def test_a_message_names_the_stop_sequence_it_stopped_at(engine: ScriptedEngine) -> None:
    body = message_body("one ST", "OP two", stop_sequences=["STOP", "HALT"])
    reply = await call(engine, "messages", body)
    assert reply["content"] == [{"type": "text", "text": "one "}]
    assert (reply["stop_reason"], reply["stop_sequence"]) == ("stop_sequence", "STOP")
    events = await call(engine, "messages", {**body, "stream": True})
    deltas = [d["delta"]["text"] for e, d in events if e == "content_block_delta"]
    assert deltas == ["one "]
    (delta,) = [d["delta"] for e, d in events if e == "message_delta"]
    assert delta == {"stop_reason": "stop_sequence", "stop_sequence": "STOP"}


async def test_a_message_cut_by_max_tokens_says_so(engine: ScriptedEngine) -> None:
    reply = await call(engine, "messages", message_body("a", "b", "c", max_tokens=1))
    assert reply["stop_reason"] == "max_tokens"
    assert reply["usage"]["output_tokens"] == 1


async def test_a_message_can_be_a_tool_use(engine: ScriptedEngine) -> None:
    reply = await call(engine, "messages", message_body(*CALL, tools=[message_tool()]))
    (block,) = reply["content"]
    assert block["type"] == "tool_use"
    assert (block["name"], block["input"]) == ("get_weather", {"city": "Paris"})
    assert reply["stop_reason"] == "tool_use"


async def test_a_streamed_tool_use_is_held_back_then_sent_whole(engine: ScriptedEngine) -> None:
    body = message_body(*CALL, tools=[message_tool()], stream=True)
    events = await call(engine, "messages", body)
    kinds = [event for event, _ in events]
    assert kinds[0] == "message_start"
    assert kinds[-1] == "message_stop"
    starts = [d["content_block"] for e, d in events if e == "content_block_start"]
    assert [block["type"] for block in starts] == ["tool_use"]
    partial = [d["delta"]["partial_json"] for e, d in events if e == "content_block_delta"]
    assert json.loads("".join(partial)) == {"city": "Paris"}
    (delta,) = [d for e, d in events if e == "message_delta"]
    assert delta["delta"]["stop_reason"] == "tool_use"
    assert delta["usage"] == {"output_tokens": 3}


async def test_a_streamed_message_counts_its_tokens(engine: ScriptedEngine) -> None:
    events = await call(engine, "messages", message_body("Hi", " there", stream=True))
    start = events[0][1]["message"]
    assert start["usage"]["input_tokens"] == chat_prompt_tokens(engine, "Hi", " there")
    deltas = [d["delta"]["text"] for e, d in events if e == "content_block_delta"]
    assert deltas == ["Hi", " there"]
    (delta,) = [d for e, d in events if e == "message_delta"]
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert delta["usage"] == {"output_tokens": 2}


async def test_a_streamed_message_that_fails_ends_with_an_error_event(
    engine: ScriptedEngine,
) -> None:
    events = await call(engine, "messages", message_body("a", "<error>", stream=True))
    assert events[-1] == (
        "error",
        {
            "type": "error",
            "error": {
                "type": "api_error",
                "message": "generation failed; the server log has the details",
            },
        },
    )
    assert "message_stop" not in [event for event, _ in events]
