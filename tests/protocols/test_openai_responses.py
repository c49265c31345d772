"""Responses API shapes and event order, checked against the official openai SDK types."""

from __future__ import annotations

import json

import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from kingpost.protocols import (
    InvalidParameterError,
    OutputFunctionCall,
    ResponsesRequest,
    ResponseStream,
    ResponseUsage,
    parse_request,
    parse_sse,
    response_object,
)

EVENT = TypeAdapter(ResponseStreamEvent)


def events_of(text: str) -> list:
    frames = parse_sse(text)
    for name, data in frames:
        assert name == json.loads(data)["type"]
    return [EVENT.validate_python(json.loads(data)) for _, data in frames]


def test_response_object_is_a_valid_sdk_response() -> None:
    result = response_object("Hi", model="gemma", usage=ResponseUsage.of(3, 1))
    parsed = Response.model_validate(result.model_dump(mode="json"))
    assert parsed.output_text == "Hi"
    assert parsed.status == "completed"
    assert parsed.usage is not None and parsed.usage.total_tokens == 4


def test_response_hitting_the_limit_is_incomplete() -> None:
    result = response_object("Hi", model="gemma", incomplete=True)
    parsed = Response.model_validate(result.model_dump(mode="json"))
    assert parsed.status == "incomplete"
    assert parsed.incomplete_details is not None
    assert parsed.incomplete_details.reason == "max_output_tokens"


def test_response_with_a_function_call_validates() -> None:
    call = OutputFunctionCall(name="add", arguments='{"a": 1}')
    parsed = Response.model_validate(
        response_object(model="gemma", function_calls=[call]).model_dump(mode="json")
    )
    assert [item.type for item in parsed.output] == ["function_call"]


def test_response_echoes_the_request_settings() -> None:
    request = parse_request(
        ResponsesRequest, {"input": "x", "instructions": "Be brief.", "temperature": 0.5}
    )
    result = response_object("y", model="gemma", request=request)
    assert result.instructions == "Be brief."
    assert result.temperature == 0.5


def test_stream_events_come_in_the_api_order() -> None:
    stream = ResponseStream(model="gemma")
    text = stream.created() + stream.text("Hel") + stream.text("lo")
    text += stream.finish(ResponseUsage.of(3, 2))
    events = events_of(text)
    assert [event.type for event in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert events[-1].response.output_text == "Hello"


def test_stream_of_a_function_call_closes_the_message_first() -> None:
    stream = ResponseStream(model="gemma")
    text = stream.created() + stream.text("ok") + stream.function_call("add", "{}", "call_9")
    events = events_of(text + stream.finish(ResponseUsage.of(1, 1)))
    kinds = [event.type for event in events]
    assert kinds.index("response.output_item.done") < kinds.index(
        "response.function_call_arguments.delta"
    )
    final = events[-1].response
    assert [item.type for item in final.output] == ["message", "function_call"]
    assert final.output[1].call_id == "call_9"


def test_stream_hitting_the_limit_ends_with_response_incomplete() -> None:
    stream = ResponseStream(model="gemma")
    events = events_of(stream.created() + stream.text("a") + stream.finish(incomplete=True))
    assert events[-1].type == "response.incomplete"


def test_request_input_string_becomes_one_user_message() -> None:
    items = parse_request(ResponsesRequest, {"input": "hello"}).input_items()
    assert [(item.type, getattr(item, "role", None)) for item in items] == [("message", "user")]


def test_request_input_items_are_told_apart_by_type() -> None:
    body = {
        "input": [
            {"role": "user", "content": "add 1 and 2"},
            {"type": "function_call", "call_id": "c1", "name": "add", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "3"},
        ]
    }
    items = parse_request(ResponsesRequest, body).input_items()
    assert [item.type for item in items] == ["message", "function_call", "function_call_output"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"input": "x", "text": {"format": {"type": "json_schema"}}}, "text.format"),
    ],
)
def test_invalid_parameters_are_named(body: dict, param: str) -> None:
    with pytest.raises(InvalidParameterError) as caught:
        parse_request(ResponsesRequest, body)
    assert caught.value.param == param
