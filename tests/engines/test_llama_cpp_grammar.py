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
