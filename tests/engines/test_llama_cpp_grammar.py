"""The JSON grammar the llama.cpp engine enforces keeps strings valid JSON."""

from __future__ import annotations

import json

import pytest

grammar_module = pytest.importorskip("llama_cpp.llama_grammar", reason="no llama-cpp-python")

from kingpost.engines.llama_cpp import strict_json_strings  # noqa: E402

SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}


def test_json_strings_exclude_raw_control_characters() -> None:
    grammar = strict_json_strings(grammar_module.json_schema_to_gbnf(json.dumps(SCHEMA)))
    char_rule = next(line for line in grammar.splitlines() if line.startswith("char ::="))
    assert r"\x00-\x1F" in char_rule
    assert r"\x7F" in char_rule


def test_a_call_layout_becomes_markers_around_each_tool_s_json() -> None:
    from kingpost.engines.generation import CallLayout, FramedCall
    from kingpost.engines.llama_cpp import layout_gbnf

    weather = {"type": "object", "properties": {"city": {"type": "string"}}}
    layout = CallLayout(
        (
            FramedCall("<function=get_weather>", weather, "</function>"),
            FramedCall("<function=get_time>", {"type": "object"}, "</function>"),
        ),
        opening="[",
        separator=";",
        closing="]",
    )
    rules = dict(line.split(" ::= ", 1) for line in layout_gbnf(layout).splitlines())
    assert rules["root"] == '"[" call ( ";" call )* "]"'
    assert rules["call"] == (
        '( "<function=get_weather>" call0 "</function>" ) | '
        '( "<function=get_time>" call1 "</function>" )'
    )
    assert '"\\"city\\""' in rules["call0-city-kv"]
    single = CallLayout(layout.options[:1], parallel=False)
    assert dict(line.split(" ::= ", 1) for line in layout_gbnf(single).splitlines())["root"] == (
        "call"
    )
