"""Native tool calls served for real, through the official OpenAI and Anthropic SDKs.

A ``kingpost serve`` of tests/models/scripted_native_tools: the scripted engine (it
replays the tokens the last user turn spells out, split on "|") with the Hermes / Qwen
call syntax, so parallel calls in ``<tool_call>`` markers, text before them, and the
tool_choice and parallel_tool_calls switches are checked end to end with no weights.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from kingpost.testing import ServerProcess
from tests.conftest import MODELS
from tests.engines.conftest import serve_from_checkout

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS: Any = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
]
CLAUDE_TOOLS: Any = [
    {"name": "get_weather", "input_schema": WEATHER},
    {"name": "get_time", "input_schema": {"type": "object"}},
]
# Text, then two calls, split mid-marker.
SCRIPT = (
    "Checking.|<tool_|call>\n"
    '{"name": "get_weather", |"arguments": {"city": "Paris"}}\n</tool_call>\n|'
    '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_|call>'
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with serve_from_checkout(MODELS / "scripted_native_tools", tmp_path_factory) as server:
        yield server


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def test_parallel_calls_come_back_as_tool_calls(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="s", messages=user(SCRIPT), tools=TOOLS)
    choice = reply.choices[0]
    calls = choice.message.tool_calls or []
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [  # type: ignore[union-attr]
        ("get_weather", {"city": "Paris"}),
        ("get_time", {}),
    ]
    assert choice.finish_reason == "tool_calls"


def test_streamed_parallel_calls_follow_the_streamed_text(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="s", messages=user(SCRIPT), tools=TOOLS, stream=True
    )
    chunks = [chunk for chunk in stream if chunk.choices]
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    calls = [call for chunk in chunks for call in chunk.choices[0].delta.tool_calls or []]
    assert text.strip() == "Checking."
    named = [(call.index, call.function.name) for call in calls if call.function and call.id]
    assert named == [(0, "get_weather"), (1, "get_time")]
    arguments = ["", ""]
    for call in calls:
        arguments[call.index] += call.function.arguments or ""  # type: ignore[union-attr]
    assert [json.loads(part) for part in arguments] == [{"city": "Paris"}, {}]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_parallel_tool_calls_false_keeps_the_first_call(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="s", messages=user(SCRIPT), tools=TOOLS, parallel_tool_calls=False
    )
    assert [c.function.name for c in reply.choices[0].message.tool_calls or []] == [  # type: ignore[union-attr]
        "get_weather"
    ]


def test_tool_choice_none_leaves_the_markers_as_text(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="s", messages=user(SCRIPT), tools=TOOLS, tool_choice="none"
    )
    message = reply.choices[0].message
    assert message.tool_calls is None and "<tool_call>" in (message.content or "")


def test_anthropic_parallel_tool_uses(claude: anthropic.Anthropic) -> None:
    reply = claude.messages.create(
        model="s", max_tokens=100, messages=user(SCRIPT), tools=CLAUDE_TOOLS
    )
    uses = [(block.name, block.input) for block in reply.content if block.type == "tool_use"]
    assert uses == [("get_weather", {"city": "Paris"}), ("get_time", {})]
    assert reply.stop_reason == "tool_use"


def test_anthropic_streamed_parallel_tool_uses(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model="s", max_tokens=100, messages=user(SCRIPT), tools=CLAUDE_TOOLS
    ) as stream:
        final = stream.get_final_message()
    assert [block.type for block in final.content] == ["text", "tool_use", "tool_use"]
    assert [block.name for block in final.content if block.type == "tool_use"] == [
        "get_weather",
        "get_time",
    ]


def test_responses_parallel_function_calls(client: openai.OpenAI) -> None:
    tools: Any = [{"type": "function", **tool["function"]} for tool in TOOLS]
    reply = client.responses.create(model="s", input=SCRIPT, tools=tools)
    calls = [item for item in reply.output if item.type == "function_call"]
    assert [(call.name, json.loads(call.arguments)) for call in calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {}),
    ]


def test_a_tool_result_turn_reaches_the_next_request(client: openai.OpenAI) -> None:
    messages: Any = [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "user", "content": "It is |sunny."},
    ]
    reply = client.chat.completions.create(model="s", messages=messages, tools=TOOLS)
    without = client.chat.completions.create(model="s", messages=messages[:2] + messages[3:])
    assert reply.choices[0].message.content == "It is sunny."
    assert reply.usage is not None and without.usage is not None
    # one token a character: the tool turn ("\x1etool:sunny") is in the prompt
    assert reply.usage.prompt_tokens - without.usage.prompt_tokens == len("\x1etool:sunny")
