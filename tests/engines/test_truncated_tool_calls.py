"""A call cut off by the token limit: its name recovered, its arguments as far as written."""

from __future__ import annotations

import pytest

from kingpost.engines.tool_calls import ToolPolicy, ToolSpec, complete_json_prefix

WEATHER = ToolSpec("get_weather")
TIME = ToolSpec("get_time")
REQUIRED = ToolPolicy([WEATHER, TIME], "required")


def test_a_call_cut_inside_its_arguments_keeps_what_was_written() -> None:
    call = REQUIRED.parse_truncated('{"name": "get_weather", "arguments": {"city": "Os')
    assert call is not None and call.truncated
    assert call.name == "get_weather"
    assert call.arguments_json == '{"city": "Os'
    assert call.arguments == {"city": "Os"}


def test_a_name_cut_short_is_recovered_when_only_one_tool_has_that_prefix() -> None:
    call = REQUIRED.parse_truncated('{"name": "get_wea')
    assert call is not None and call.name == "get_weather" and call.arguments_json == ""


def test_an_ambiguous_cut_name_is_no_call() -> None:
    assert REQUIRED.parse_truncated('{"name": "get_') is None


def test_a_forced_tool_is_the_call_whatever_was_written() -> None:
    forced = ToolPolicy([WEATHER, TIME], "required", forced="get_time")
    call = forced.parse_truncated('{"name": "get_')
    assert call is not None and call.name == "get_time"


def test_text_that_is_no_call_stays_text() -> None:
    assert REQUIRED.parse_truncated("The weather is") is None
    assert ToolPolicy().parse_truncated('{"name": "get_weather"') is None


@pytest.mark.parametrize(
    ("prefix", "value"),
    [
        ('{"a": 1, "b": ', {"a": 1}),
        ('{"a": [1, 2', {"a": [1, 2]}),
        ('{"a": {"b": "x\\"', {"a": {"b": 'x"'}}),
        ('{"a": tr', {}),
        ("", None),
    ],
)
def test_a_json_prefix_is_completed_as_far_as_it_goes(prefix: str, value: object) -> None:
    assert complete_json_prefix(prefix) == value
