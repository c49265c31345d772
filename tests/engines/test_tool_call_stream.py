"""Following tool calls while they are written: names early, arguments as they come."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kingpost.engines.llm_replies import NativeCallReader, ToolCallReader
from kingpost.engines.tool_call_stream import (
    HEAD_LIMIT,
    CallArguments,
    CallEvent,
    CallOpened,
    CallStreamer,
)
from kingpost.engines.tool_calls import SYNTAXES, ToolPolicy, ToolSpec, ToolSyntax

SYNTAX = {syntax.name: syntax for syntax in SYNTAXES}
WEATHER = ToolSpec("get_weather", None, {"type": "object"})
TIME = ToolSpec("get_time")
CALLS = [("get_weather", {"city": "Oslo {north}", "days": [1, 2]}), ("get_time", {})]


def written(syntax: ToolSyntax, calls: list[tuple[str, dict[str, Any]]]) -> str:
    """Calls in a family's markers, as its required-call layout writes them."""
    parts = []
    for name, arguments in calls:
        if syntax.header is not None:
            payload = json.dumps(arguments)
        elif syntax.keyed_by_name:
            payload = json.dumps({name: arguments})
        else:
            payload = json.dumps({syntax.name_key: name, syntax.arguments_key: arguments})
        parts.append(syntax.call_prefix.replace("{name}", name) + payload + syntax.call_suffix)
    return syntax.opening + syntax.separator.join(parts) + syntax.closing


def streamed(events: list[CallEvent]) -> list[tuple[str, str]]:
    """Each call's name and its arguments, put together from the events."""
    calls: list[tuple[str, str]] = []
    for event in events:
        if isinstance(event, CallOpened):
            assert event.index == len(calls)
            calls.append((event.name, ""))
        else:
            name, arguments = calls[event.index]
            calls[event.index] = (name, arguments + event.delta)
    return calls


def feed_by_character(streamer: CallStreamer, text: str) -> list[CallEvent]:
    return [event for character in text for event in streamer.feed(character)]


@pytest.mark.parametrize("syntax", SYNTAXES, ids=lambda syntax: syntax.name)
def test_every_family_streams_each_call_as_it_is_written(syntax: ToolSyntax) -> None:
    calls = CALLS if syntax.parallel else CALLS[:1]
    text = written(syntax, calls)
    streamer = CallStreamer(ToolPolicy([WEATHER, TIME], syntax=syntax))
    events = feed_by_character(streamer, text[syntax.find(text) :])
    assert [(name, json.loads(arguments)) for name, arguments in streamed(events)] == calls
    assert all(call.complete for call in streamer.calls)


def test_the_name_comes_before_the_arguments_end() -> None:
    streamer = CallStreamer(ToolPolicy([WEATHER]))
    assert streamer.feed('{"name": "get_weather", ') == []
    assert streamer.feed('"arguments": {"city": "Os') == [
        CallOpened(0, "get_weather"),
        CallArguments(0, '{"city": "Os'),
    ]
    assert streamer.feed('lo"}') == [CallArguments(0, 'lo"}')]
    assert streamer.feed("}") == []  # the wrapper's end is not part of the arguments


def test_brackets_inside_strings_do_not_end_the_arguments() -> None:
    streamer = CallStreamer(ToolPolicy([WEATHER]))
    arguments = '{"q": "a}]\\"}{", "n": [{"x": 1}]}'
    events = feed_by_character(streamer, '{"name": "get_weather", "arguments": ' + arguments + "}")
    assert streamed(events) == [("get_weather", arguments)]


@pytest.mark.parametrize(
    "text",
    [
        '{"arguments": {"city": "Oslo"}, "name": "get_weather"}',  # arguments first
        '{"name": "get_weather", "arguments": "{\\"city\\": 1}"}',  # arguments as a string
        '{"name": "delete_everything", "arguments": {}}',  # no such tool
        '{"answer": 42}',  # not a call at all
    ],
)
def test_a_head_it_cannot_read_streams_nothing(text: str) -> None:
    streamer = CallStreamer(ToolPolicy([WEATHER]))
    assert feed_by_character(streamer, text) == []


def test_a_head_that_never_forms_stops_the_streaming() -> None:
    streamer = CallStreamer(ToolPolicy([WEATHER], syntax=SYNTAX["hermes"]))
    assert streamer.feed("<tool_call>" + " " * HEAD_LIMIT + "x") == []
    assert streamer.feed('{"name": "get_weather", "arguments": {}}') == []


def test_a_second_call_is_not_streamed_when_parallel_calls_are_off() -> None:
    syntax = SYNTAX["hermes"]
    streamer = CallStreamer(ToolPolicy([WEATHER, TIME], syntax=syntax, parallel=False))
    events = streamer.feed(written(syntax, CALLS))
    assert [name for name, _ in streamed(events)] == ["get_weather"]


def test_a_prompt_based_call_streams_through_the_reader_and_parses_at_the_end() -> None:
    reader = ToolCallReader(ToolPolicy([WEATHER]))
    pieces = [" ", '{"name": "get_weather", "arguments": {', '"city": "Oslo"', "}}"]
    assert [reader.feed(piece) for piece in pieces] == ["", "", "", ""]
    assert streamed(reader.take_events()) == [("get_weather", '{"city": "Oslo"}')]
    text, calls = reader.finish()
    assert text == "" and [(call.name, call.arguments) for call in calls] == [
        ("get_weather", {"city": "Oslo"})
    ]


def test_text_before_native_calls_streams_first_then_the_calls() -> None:
    syntax = SYNTAX["hermes"]
    reader = NativeCallReader(ToolPolicy([WEATHER, TIME], syntax=syntax))
    assert reader.feed("Checking. ") == "Checking. "
    assert reader.feed(written(syntax, CALLS)) == ""
    assert [name for name, _ in streamed(reader.take_events())] == ["get_weather", "get_time"]
    assert [call.name for call in reader.finish()[1]] == ["get_weather", "get_time"]


def test_a_streamed_call_cut_off_is_reported_truncated() -> None:
    reader = NativeCallReader(ToolPolicy([WEATHER], "required", syntax=SYNTAX["hermes"]))
    reader.feed('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Os')
    assert streamed(reader.take_events()) == [("get_weather", '{"city": "Os')]
    _, calls = reader.finish(cut_off=True)
    assert [(c.name, c.arguments, c.truncated) for c in calls] == [
        ("get_weather", {"city": "Os"}, True)
    ]


def test_a_streamed_call_that_does_not_parse_at_the_end_is_kept_as_written() -> None:
    """A stop sequence can cut a call: what was sent stays a call, not text."""
    reader = ToolCallReader(ToolPolicy([WEATHER]))
    reader.feed('{"name": "get_weather", "arguments": {"city": ')
    _, calls = reader.finish()
    assert [(c.name, c.arguments, c.truncated_arguments) for c in calls] == [
        ("get_weather", {}, '{"city": ')
    ]


def test_a_call_read_only_at_the_end_still_parses() -> None:
    reader = ToolCallReader(ToolPolicy([WEATHER]))
    reader.feed('{"arguments": {"city": "Oslo"}, "name": "get_weather"}')
    assert reader.take_events() == []
    assert [(c.name, c.arguments) for c in reader.finish()[1]] == [
        ("get_weather", {"city": "Oslo"})
    ]
