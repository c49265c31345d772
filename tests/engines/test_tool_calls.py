"""Tool policies: prompting, forcing a call by schema, reading a call from a reply."""

from __future__ import annotations

import json

from kingpost.engines.tool_calls import ToolPolicy, ToolSpec, format_call, format_result

WEATHER = ToolSpec(
    "get_weather",
    "Weather for a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
TIME = ToolSpec("get_time")


def test_no_tools_means_no_instructions_and_no_calls() -> None:
    policy = ToolPolicy()
    assert policy.instructions() == ""
    assert policy.parse('{"name": "get_weather", "arguments": {}}') is None


def test_instructions_list_every_offered_tool() -> None:
    text = ToolPolicy([WEATHER, TIME]).instructions()
    assert "get_weather" in text and "get_time" in text


def test_auto_mode_does_not_constrain_the_output() -> None:
    assert ToolPolicy([WEATHER], "auto").call_schema() is None


def test_a_forced_tool_gets_a_schema_pinning_its_name() -> None:
    schema = ToolPolicy([WEATHER, TIME], "required", forced="get_weather").call_schema()
    assert schema is not None
    assert schema["properties"]["name"] == {"const": "get_weather"}
    assert schema["properties"]["arguments"] == WEATHER.parameters


def test_required_with_several_tools_allows_any_of_them() -> None:
    schema = ToolPolicy([WEATHER, TIME], "required").call_schema()
    assert schema is not None and len(schema["anyOf"]) == 2


def test_none_mode_offers_nothing() -> None:
    policy = ToolPolicy([WEATHER], "none")
    assert policy.instructions() == "" and policy.call_schema() is None


def test_a_reply_naming_a_tool_is_a_call() -> None:
    call = ToolPolicy([WEATHER]).parse(' {"name": "get_weather", "arguments": {"city": "Oslo"}}')
    assert call is not None
    assert (call.name, call.arguments) == ("get_weather", {"city": "Oslo"})
    assert json.loads(call.arguments_json) == {"city": "Oslo"}


def test_a_reply_naming_an_unknown_tool_is_text() -> None:
    assert ToolPolicy([WEATHER]).parse('{"name": "rm_rf", "arguments": {}}') is None


def test_arguments_given_as_a_json_string_are_parsed() -> None:
    call = ToolPolicy([WEATHER]).parse(
        '{"name": "get_weather", "arguments": "{\\"city\\": \\"Rome\\"}"}'
    )
    assert call is not None and call.arguments == {"city": "Rome"}


def test_past_calls_and_results_render_as_text() -> None:
    assert json.loads(format_call("get_time", "{}")) == {"name": "get_time", "arguments": {}}
    assert "call_1" in format_result("call_1", "12:00")
    assert format_result("call_1", "boom", is_error=True).startswith("Error")
