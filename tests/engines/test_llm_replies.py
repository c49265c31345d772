"""Reading a reply in a model's own call markers as it streams."""

from __future__ import annotations

from kingpost.engines.llm_replies import NativeCallReader
from kingpost.engines.tool_calls import SYNTAXES, ToolPolicy, ToolSpec

SYNTAX = {syntax.name: syntax for syntax in SYNTAXES}
WEATHER = ToolSpec("get_weather", None, {"type": "object"})
TIME = ToolSpec("get_time")
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'


def read(reader: NativeCallReader, pieces: list[str]) -> list[str]:
    return [reader.feed(piece) for piece in pieces]


def test_text_streams_until_the_marker_and_the_calls_come_at_the_end() -> None:
    reader = NativeCallReader(ToolPolicy([WEATHER], syntax=SYNTAX["hermes"]))
    pieces = ["Let me ", "check. <tool", "_call>", CALL[len("<tool_call>") :]]
    assert read(reader, pieces) == ["Let me ", "check. ", "", ""]
    text, calls = reader.finish()
    assert text == "" and [(c.name, c.arguments) for c in calls] == [
        ("get_weather", {"city": "Oslo"})
    ]


def test_a_held_back_start_of_the_marker_is_released_when_it_is_not_one() -> None:
    reader = NativeCallReader(ToolPolicy([WEATHER], syntax=SYNTAX["hermes"]))
    assert read(reader, ["a <to", "y> b"]) == ["a ", "<toy> b"]
    assert reader.finish() == ("", [])


def test_parallel_calls_all_come_back() -> None:
    reader = NativeCallReader(ToolPolicy([WEATHER, TIME], syntax=SYNTAX["hermes"]))
    read(reader, [CALL, '\n<tool_call>{"name": "get_time", "arguments": {}}</tool_call>'])
    _, calls = reader.finish()
    assert [call.name for call in calls] == ["get_weather", "get_time"]


def test_markers_that_do_not_parse_come_back_as_text() -> None:
    reader = NativeCallReader(ToolPolicy([WEATHER], syntax=SYNTAX["hermes"]))
    assert read(reader, ["<tool_call>not json"]) == [""]
    assert reader.finish() == ("<tool_call>not json", [])


def test_with_tool_choice_none_the_markers_are_plain_text() -> None:
    reader = NativeCallReader(ToolPolicy([WEATHER], "none", syntax=SYNTAX["hermes"]))
    assert read(reader, [CALL]) == [CALL]
    assert reader.finish() == ("", [])


def test_a_reply_that_must_open_with_the_call_streams_once_it_does_not() -> None:
    reader = NativeCallReader(ToolPolicy([WEATHER], syntax=SYNTAX["llama3"]))
    assert read(reader, ["  ", "Hello", " there"]) == ["", "  Hello", " there"]
    reader = NativeCallReader(ToolPolicy([WEATHER], syntax=SYNTAX["llama3"]))
    assert read(reader, ['{"name": "get_weather", ', '"parameters": {}}']) == ["", ""]
    assert [call.name for call in reader.finish()[1]] == ["get_weather"]


def test_a_call_cut_off_by_the_token_limit_is_reported_truncated() -> None:
    reader = NativeCallReader(ToolPolicy([WEATHER], "required", syntax=SYNTAX["hermes"]))
    read(reader, ['<tool_call>\n{"name": "get_weather", "arguments": {"city": "Os'])
    _, calls = reader.finish(cut_off=True)
    assert [(c.name, c.arguments, c.truncated) for c in calls] == [
        ("get_weather", {"city": "Os"}, True)
    ]
