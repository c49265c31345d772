"""Anthropic message shapes and event order, checked against the official anthropic SDK."""

from __future__ import annotations

import json

import pytest
from anthropic.types import Message, RawMessageStreamEvent
from pydantic import TypeAdapter

from kingpost.protocols import (
    InvalidParameterError,
    MessagesRequest,
    MessageStream,
    ToolUseBlock,
    anthropic_stream_error,
    message,
    parse_request,
    parse_sse,
)
from kingpost.server.errors import ErrorDialect, ErrorTable

EVENT = TypeAdapter(RawMessageStreamEvent)


def events_of(text: str) -> list:
    frames = parse_sse(text)
    for name, data in frames:
        assert name == json.loads(data)["type"]
    return [EVENT.validate_python(json.loads(data)) for _, data in frames]


def test_message_is_a_valid_sdk_message() -> None:
    result = message("Hi", model="gemma", input_tokens=3, output_tokens=1)
    parsed = Message.model_validate(result.model_dump(mode="json"))
    assert parsed.content[0].type == "text"
    assert parsed.stop_reason == "end_turn"
    assert parsed.usage.input_tokens == 3


def test_message_with_tool_use_stops_for_tool_use() -> None:
    block = ToolUseBlock(name="add", input={"a": 1})
    parsed = Message.model_validate(
        message(model="gemma", tool_uses=[block]).model_dump(mode="json")
    )
    assert parsed.stop_reason == "tool_use"
    assert parsed.content[0].type == "tool_use"


def test_stream_events_come_in_the_api_order() -> None:
    stream = MessageStream(model="gemma", input_tokens=4)
    text = stream.start() + stream.text("Hel") + stream.text("lo")
    text += stream.finish("max_tokens", output_tokens=2)
    events = events_of(text)
    assert [event.type for event in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[0].message.usage.input_tokens == 4
    assert events[-2].delta.stop_reason == "max_tokens"
    assert events[-2].usage.output_tokens == 2


def test_stream_tool_use_is_its_own_block() -> None:
    stream = MessageStream(model="gemma")
    text = stream.start() + stream.text("Let me add.") + stream.tool_use("add", {"a": 1}, "toolu_1")
    events = events_of(text + stream.finish("tool_use", output_tokens=9))
    starts = [event for event in events if event.type == "content_block_start"]
    assert [(event.index, event.content_block.type) for event in starts] == [
        (0, "text"),
        (1, "tool_use"),
    ]
    delta = next(
        event for event in events if event.type == "content_block_delta" and event.index == 1
    )
    assert json.loads(delta.delta.partial_json) == {"a": 1}


def test_stream_with_no_text_still_ends_properly() -> None:
    stream = MessageStream(model="gemma")
    events = events_of(stream.start() + stream.finish("end_turn", output_tokens=0))
    assert [event.type for event in events] == ["message_start", "message_delta", "message_stop"]


def test_system_blocks_are_joined() -> None:
    request = parse_request(
        MessagesRequest,
        {
            "max_tokens": 5,
            "system": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            "messages": [{"role": "user", "content": "x"}],
        },
    )
    assert request.system_text() == "a\nb"


def test_content_blocks_are_told_apart_by_type() -> None:
    request = parse_request(
        MessagesRequest,
        {
            "max_tokens": 5,
            "messages": [
                {"role": "user", "content": "add"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t", "name": "add", "input": {}}],
                },
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "t", "content": "3"}],
                },
            ],
        },
    )
    kinds = [block.type for msg in request.messages for block in msg.blocks()]
    assert kinds == ["text", "tool_use", "tool_result"]


def test_output_config_carries_a_json_schema() -> None:
    request = parse_request(
        MessagesRequest,
        {
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "x"}],
            "output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}},
        },
    )
    assert request.output_schema() == {"type": "object"}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
        (
            {"max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "temperature": 1.5},
            "temperature",
        ),
        ({"max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
    ],
)
def test_invalid_parameters_are_named(body: dict, param: str) -> None:
    with pytest.raises(InvalidParameterError) as caught:
        parse_request(MessagesRequest, body)
    assert caught.value.param == param


def test_anthropic_error_response_has_the_anthropic_shape() -> None:
    error = InvalidParameterError("max_tokens", "Field required")
    response = ErrorTable().reply(error, ErrorDialect.ANTHROPIC)
    assert response.status == 400
    assert json.loads(response.body) == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
    }


def test_stream_error_is_an_anthropic_error_event() -> None:
    ((event, data),) = parse_sse(anthropic_stream_error("overloaded", type="overloaded_error"))
    assert event == "error"
    assert json.loads(data) == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "overloaded"},
    }
