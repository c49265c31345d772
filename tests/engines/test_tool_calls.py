"""Tool policies: prompting, forcing a call by schema, reading a call from a reply, and
the families' own call syntaxes."""

from __future__ import annotations

import json

import pytest

from kingpost.engines.tool_calls import (
    SYNTAXES,
    ToolPolicy,
    ToolSpec,
    format_call,
    format_result,
    syntax_for_template,
)

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


# ---- native syntaxes --------------------------------------------------------------------

SYNTAX = {syntax.name: syntax for syntax in SYNTAXES}
DS = {word: f"<\uff5c{word.replace(' ', chr(0x2581))}\uff5c>" for word in (
    "tool calls begin", "tool call begin", "tool sep", "tool call end", "tool calls end"
)}  # fmt: skip
TOOLS_LOOP = "{% for tool in tools %}{{ tool | tojson }}{% endfor %}"


@pytest.mark.parametrize(
    ("template", "family"),
    [
        (TOOLS_LOOP + "{% for c in message.tool_calls %}<tool_call>{% endfor %}", "hermes"),
        (TOOLS_LOOP + "<|start_header_id|>ipython<|end_header_id|>{{ tool_calls }}", "llama3"),
        (TOOLS_LOOP + "[TOOL_CALLS]{{ message.tool_calls | tojson }}", "mistral-nemo"),
        (TOOLS_LOOP + "[TOOL_CALLS]{{ name }}[ARGS]{{ tool_calls }}", "magistral"),
        (TOOLS_LOOP + "<|START_ACTION|>{{ message.tool_calls }}", "command-r7b"),
        (TOOLS_LOOP + DS["tool calls begin"] + "{{ tool_calls }}", "deepseek"),
        (TOOLS_LOOP + "{% if role == 'tool' %}<|tool_call|>{% endif %}", "granite"),
    ],
)
def test_a_template_that_renders_tools_names_its_family(template: str, family: str) -> None:
    syntax = syntax_for_template(template)
    assert syntax is not None and syntax.name == family


@pytest.mark.parametrize(
    "template",
    [
        "{% for m in messages %}<tool_call>{{ m.content }}{% endfor %}",  # no tools rendered
        TOOLS_LOOP + "<tool_call><function=x><parameter=y>{{ tool_calls }}",  # XML arguments
        TOOLS_LOOP + "{{ tool_calls }} some unknown markers",
    ],
)
def test_other_templates_keep_the_prompt_based_tools(template: str) -> None:
    assert syntax_for_template(template) is None


PARIS = ("get_weather", {"city": "Paris"})
NOW = ("get_time", {})


@pytest.mark.parametrize(
    ("family", "reply", "calls"),
    [
        (
            "hermes",
            '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
            '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>',
            [PARIS, NOW],
        ),
        ("llama3", '{"name": "get_weather", "parameters": {"city": "Paris"}}', [PARIS]),
        ("llama3", '<|python_tag|>{"name": "get_time", "parameters": {}}', [NOW]),
        (
            "mistral-nemo",
            '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}, '
            '"id": "a1b2c3d4e"}, {"name": "get_time", "arguments": {}}]',
            [PARIS, NOW],
        ),
        (
            "magistral",
            '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]get_time[ARGS]{}',
            [PARIS, NOW],
        ),
        ("functionary-v3.1", '<function=get_weather>{"city": "Paris"}</function>', [PARIS]),
        ("functionary-v3.2", '>>>get_weather\n{"city": "Paris"}\n>>>get_time\n{}', [PARIS, NOW]),
        (
            "firefunction-v2",
            ' functools[{"name": "get_weather", "arguments": {"city": "Paris"}}]',
            [PARIS],
        ),
        (
            "command-r7b",
            '<|START_ACTION|>[{"tool_call_id": "0", "tool_name": "get_weather", '
            '"parameters": {"city": "Paris"}}]<|END_ACTION|>',
            [PARIS],
        ),
        (
            "deepseek",
            f"{DS['tool calls begin']}{DS['tool call begin']}function{DS['tool sep']}get_weather"
            f'\n```json\n{{"city": "Paris"}}\n```{DS["tool call end"]}{DS["tool calls end"]}',
            [PARIS],
        ),
        (
            "granite",
            '<|tool_call|>[{"name": "get_weather", "arguments": {"city": "Paris"}}]',
            [PARIS],
        ),
        (
            "nemotron-v2",
            '<TOOLCALL>[{"name": "get_weather", "arguments": {"city": "Paris"}}]</TOOLCALL>',
            [PARIS],
        ),
        (
            "kimi-k2",
            "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0"
            '<|tool_call_argument_begin|>{"city": "Paris"}<|tool_call_end|>'
            "<|tool_calls_section_end|>",
            [PARIS],
        ),
        (
            "apertus",
            '<|tools_prefix|>[{"get_weather": {"city": "Paris"}}]<|tools_suffix|>',
            [PARIS],
        ),
    ],
)
def test_each_family_s_calls_are_read_in_its_own_markers(
    family: str, reply: str, calls: list[tuple[str, dict[str, str]]]
) -> None:
    policy = ToolPolicy([WEATHER, TIME], syntax=SYNTAX[family])
    text, parsed = policy.parse_native(reply)
    assert text == ""
    assert [(call.name, call.arguments) for call in parsed] == calls


def test_text_before_the_calls_is_kept_as_text() -> None:
    policy = ToolPolicy([WEATHER], syntax=SYNTAX["hermes"])
    text, calls = policy.parse_native(
        'Let me look.\n<tool_call>{"name": "get_weather", '
        '"arguments": {"city": "Oslo"}}</tool_call>'
    )
    assert text == "Let me look." and [call.arguments for call in calls] == [{"city": "Oslo"}]


def test_a_native_call_naming_an_unknown_tool_is_text() -> None:
    policy = ToolPolicy([WEATHER], syntax=SYNTAX["hermes"])
    reply = '<tool_call>{"name": "launch", "arguments": {}}</tool_call>'
    assert policy.parse_native(reply) == (reply, [])


def test_without_parallel_calls_only_the_first_is_kept() -> None:
    policy = ToolPolicy([WEATHER, TIME], syntax=SYNTAX["hermes"], parallel=False)
    _, calls = policy.parse_native(
        '<tool_call>{"name": "get_time", "arguments": {}}</tool_call>'
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
    )
    assert [call.name for call in calls] == ["get_time"]


def test_a_native_policy_puts_nothing_in_the_prompt_and_no_json_wrapper() -> None:
    policy = ToolPolicy([WEATHER], "required", syntax=SYNTAX["hermes"])
    assert policy.instructions() == "" and policy.call_schema() is None
    (definition,) = policy.tool_definitions() or []
    assert definition["function"]["name"] == "get_weather"


def test_a_required_native_call_is_laid_out_in_the_family_s_markers() -> None:
    forced = ToolPolicy([WEATHER, TIME], "required", forced="get_weather", syntax=SYNTAX["hermes"])
    layout = forced.call_layout()
    assert layout is not None and layout.parallel
    (option,) = layout.options
    assert (option.prefix, option.suffix) == ("<tool_call>\n", "\n</tool_call>")
    assert list(option.schema["properties"]) == ["name", "arguments"]  # name first
    assert ToolPolicy([WEATHER], "auto", syntax=SYNTAX["hermes"]).call_layout() is None
    named = ToolPolicy([WEATHER], "required", syntax=SYNTAX["functionary-v3.1"]).call_layout()
    assert named is not None and named.options[0].prefix == "<function=get_weather>"
    single = ToolPolicy([WEATHER], "required", syntax=SYNTAX["llama3"]).call_layout()
    assert single is not None and not single.parallel  # Llama 3.1 makes one call a turn
    assert list(single.options[0].schema["properties"]) == ["name", "parameters"]


def test_a_native_call_cut_off_by_the_token_limit_is_kept_truncated() -> None:
    syntax = SYNTAX["hermes"]
    calls = syntax.read_calls(
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Par',
        {"get_weather"},
        cut_off=True,
    )
    assert calls is not None
    (call,) = calls
    assert call.name == "get_weather" and call.truncated and call.arguments == {"city": "Par"}
