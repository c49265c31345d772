"""Each API's conversation becomes the same plain chat turns."""

from __future__ import annotations

import dataclasses

from kingpost.engines.generation import ChatTurn
from kingpost.engines.llm_conversations import (
    anthropic_tool_policy,
    anthropic_turns,
    chat_tool_policy,
    chat_turns,
    responses_tool_policy,
    responses_turns,
    settle_turns,
)
from kingpost.engines.tool_calls import SYNTAXES, ToolPolicy, ToolSpec
from kingpost.protocols import (
    ChatCompletionRequest,
    MessagesRequest,
    ResponsesRequest,
    parse_request,
)

TOOL = {"type": "object", "properties": {"city": {"type": "string"}}}


def test_system_turns_are_gathered_first_and_same_roles_merged() -> None:
    turns = [
        ChatTurn("user", "a"),
        ChatTurn("system", "rules"),
        ChatTurn("user", "b"),
        ChatTurn("assistant", "c"),
    ]
    assert settle_turns(turns, ToolPolicy()) == [
        ChatTurn("system", "rules"),
        ChatTurn("user", "a\n\nb"),
        ChatTurn("assistant", "c"),
    ]


def test_tool_instructions_join_the_system_turn() -> None:
    policy = ToolPolicy([ToolSpec("get_weather")])
    settled = settle_turns([ChatTurn("user", "hi")], policy)
    assert settled[0].role == "system" and "get_weather" in settled[0].content


def test_openai_chat_tool_call_round_trip_becomes_text_turns() -> None:
    body = parse_request(
        ChatCompletionRequest,
        {
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": "Weather in Oslo?"},
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
            ],
            "tools": [
                {"type": "function", "function": {"name": "get_weather", "parameters": TOOL}}
            ],
            "tool_choice": "none",
        },
    )
    turns = chat_turns(body, chat_tool_policy(body))
    assert [turn.role for turn in turns] == ["system", "user", "assistant", "user"]
    assert turns[0].content == "Be brief."  # tool_choice none: no tool instructions
    assert '"get_weather"' in turns[2].content
    assert "sunny" in turns[3].content and "call_1" in turns[3].content


def test_a_named_openai_tool_choice_forces_that_tool() -> None:
    body = parse_request(
        ChatCompletionRequest,
        {
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "tool_choice": {"type": "function", "function": {"name": "f"}},
        },
    )
    policy = chat_tool_policy(body)
    assert (policy.mode, policy.forced) == ("required", "f")


def test_responses_instructions_are_the_system_turn() -> None:
    body = parse_request(
        ResponsesRequest,
        {
            "instructions": "Answer in French.",
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "42"},
            ],
        },
    )
    turns = responses_turns(body, responses_tool_policy(body))
    assert [turn.role for turn in turns] == ["system", "user", "assistant", "user"]
    assert turns[0].content == "Answer in French."
    assert "42" in turns[3].content


def test_anthropic_system_and_tool_blocks_become_turns() -> None:
    body = parse_request(
        MessagesRequest,
        {
            "max_tokens": 10,
            "system": "Be brief.",
            "tools": [{"name": "f", "input_schema": TOOL}],
            "tool_choice": {"type": "any"},
            "messages": [
                {"role": "user", "content": "go"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}],
                },
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "done"}],
                },
            ],
        },
    )
    policy = anthropic_tool_policy(body)
    turns = anthropic_turns(body, policy)
    assert policy.mode == "required" and policy.forced is None
    assert [turn.role for turn in turns] == ["system", "user", "assistant", "user"]
    assert turns[0].content.startswith("Be brief.")
    assert "done" in turns[3].content


HERMES = next(syntax for syntax in SYNTAXES if syntax.name == "hermes")


def test_for_a_native_template_calls_and_results_keep_their_structure() -> None:
    body = parse_request(
        ChatCompletionRequest,
        {
            "messages": [
                {"role": "user", "content": "Weather in Oslo and Rome?"},
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": f"call_{city}",
                            "type": "function",
                            "function": {
                                "name": "get_weather",
                                "arguments": f'{{"city": "{city}"}}',
                            },
                        }
                        for city in ("Oslo", "Rome")
                    ],
                },
                {"role": "tool", "tool_call_id": "call_Oslo", "content": "sunny"},
                {"role": "tool", "tool_call_id": "call_Rome", "content": "rain"},
            ],
            "tools": [
                {"type": "function", "function": {"name": "get_weather", "parameters": TOOL}}
            ],
        },
    )
    policy = dataclasses.replace(chat_tool_policy(body), syntax=HERMES)
    turns = chat_turns(body, policy)
    assert [turn.role for turn in turns] == ["user", "assistant", "tool", "tool"]
    assert [call.name for call in turns[1].calls] == ["get_weather", "get_weather"]
    assert [(turn.content, turn.call_id, turn.name) for turn in turns[2:]] == [
        ("sunny", "call_Oslo", "get_weather"),
        ("rain", "call_Rome", "get_weather"),
    ]


def test_an_anthropic_error_result_reaches_a_native_template_as_a_tool_turn() -> None:
    body = parse_request(
        MessagesRequest,
        {
            "max_tokens": 5,
            "messages": [
                {"role": "user", "content": "Weather?"},
                {
                    "role": "assistant",
                    "content": [
                        {
                            "type": "tool_use",
                            "id": "tu_1",
                            "name": "get_weather",
                            "input": {"city": "Oslo"},
                        }
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "tu_1",
                            "content": "down",
                            "is_error": True,
                        }
                    ],
                },
            ],
            "tools": [{"name": "get_weather", "input_schema": TOOL}],
        },
    )
    policy = dataclasses.replace(anthropic_tool_policy(body), syntax=HERMES)
    turns = anthropic_turns(body, policy)
    assert [turn.role for turn in turns] == ["user", "assistant", "tool"]
    assert turns[1].calls[0].arguments == '{"city": "Oslo"}'
    assert (turns[2].content, turns[2].name) == ("Error: down", "get_weather")
